"""prism_kernels.data field mapping: schema detection, --fields parsing, extraction and its errors."""

import json

import pytest

from prism_kernels.data import DataError, FieldMap, Record, Sample, detect_fields, open_dataset, parse_fields

from tiny_models import GSM8K_TRAIN, SHARED_DATA, gsm8k_records


@pytest.mark.parametrize("columns,expected", [
    (["question", "answer"], FieldMap("pair", prompt="question", response="answer")),
    (["id", "prompt", "completion"], FieldMap("pair", prompt="prompt", response="completion")),
    (["prompt", "response", "score"], FieldMap("pair", prompt="prompt", response="response")),
    (["Body", "Question", "Equation", "Answer"], FieldMap("pair", prompt="Question", response="Answer")),
    (["instruction", "input", "output"], FieldMap("instruction", instruction="instruction", input="input",
                                                  output="output")),
    (["instruction", "output", "system"], FieldMap("instruction", instruction="instruction", output="output",
                                                   system="system")),
    (["instruction", "context", "response", "category"], FieldMap("instruction", instruction="instruction",
                                                                  input="context", output="response")),
    (["messages", "prompt"], FieldMap("messages", messages="messages")),
    (["id", "conversations"], FieldMap("messages", messages="conversations")),
    (["system_prompt", "question", "answer"], FieldMap("pair", prompt="question", response="answer",
                                                       system="system_prompt")),
    (["problem", "solution", "level"], FieldMap("pair", prompt="problem", response="solution")),
])
def test_detect_fields_on_the_common_schemas(columns, expected):
    assert detect_fields(columns) == expected


def test_detect_fields_failure_lists_the_columns():
    with pytest.raises(DataError, match=r"fields: text, label\); pass --fields") as e:
        detect_fields(["text", "label"])
    assert "\n" not in str(e.value)


def test_detect_fields_on_real_files():
    assert detect_fields(open_dataset([str(GSM8K_TRAIN)]).columns()).describe() == "prompt=question, response=answer"
    svamp = SHARED_DATA / "svamp" / "SVAMP.json"
    if svamp.exists():
        fm = detect_fields(open_dataset([str(svamp)]).columns())
        assert fm.describe() == "prompt=Question, response=Answer"
        with open(svamp) as f:
            first = json.load(f)[0]
        s = fm.extract(first)
        assert s.response == str(first["Answer"]) and isinstance(first["Answer"], float)  # numbers via str()


@pytest.mark.parametrize("spec,expected", [
    ("prompt=question,response=solution", FieldMap("pair", prompt="question", response="solution")),
    (" question = q , answer = a ", FieldMap("pair", prompt="q", response="a")),
    ("prompt=p,completion=c,system=sys", FieldMap("pair", prompt="p", response="c", system="sys")),
    ("messages=conversation", FieldMap("messages", messages="conversation")),
    ("instruction=task,input=ctx,output=out", FieldMap("instruction", instruction="task", input="ctx", output="out")),
])
def test_parse_fields(spec, expected):
    fm = parse_fields(spec)
    assert fm == expected
    assert parse_fields(fm.describe().replace(" ", "")) == fm
    assert FieldMap.from_json(json.loads(json.dumps(fm.to_json()))) == fm


@pytest.mark.parametrize("spec,message", [
    ("", "--fields is empty"),
    ("prompt", "'prompt' is not SLOT=FIELD"),
    ("prompt=", "'prompt=' is not SLOT=FIELD"),
    ("prompt=a,response=b,prompt=c", "prompt is given twice"),
    ("question=a,prompt=b", "prompt is given twice"),
    ("label=x", "unknown slot 'label'"),
    ("prompt=q", "needs prompt/response; response is not set"),
    ("messages=m,prompt=p", "cannot use prompt=p"),
    ("system=s", "names no prompt/response"),
    ("instruction=i", "needs instruction/output; output is not set"),
])
def test_parse_fields_errors(spec, message):
    with pytest.raises(DataError, match=message.replace("(", r"\(")) as e:
        parse_fields(spec)
    assert "\n" not in str(e.value)


def test_from_json_rejects_unknown_keys():
    with pytest.raises(DataError, match="unknown keys"):
        FieldMap.from_json({"kind": "pair", "prompt": "a", "response": "b", "extra": "c"})
    with pytest.raises(DataError, match="kind must be"):
        FieldMap.from_json({"kind": "table"})


def test_extract_pair_instruction_and_system():
    r = gsm8k_records(1)[0]
    assert detect_fields(r).extract(r) == Sample([{"role": "user", "content": r["question"]}], r["answer"])
    fm = FieldMap("instruction", instruction="instruction", input="input", output="output", system="system")
    s = fm.extract({"instruction": "Add.", "input": "2 and 3", "output": 5, "system": "Be brief."})
    assert s == Sample([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add.\n\n2 and 3"}],
                       "5")
    assert fm.extract({"instruction": "Say hi.", "input": "", "output": "hi"}).messages == [
        {"role": "user", "content": "Say hi."}]


def test_extract_messages_last_assistant_turn_is_the_response():
    fm = detect_fields(["messages"])
    conv = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
            {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"},
            {"role": "assistant", "content": "A2"}, {"role": "user", "content": "dangling"}]
    s = fm.extract({"messages": conv})
    assert s.messages == conv[:4] and s.response == "A2"
    sharegpt = [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]
    assert detect_fields(["conversations"]).extract({"conversations": sharegpt}) == Sample(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], "A")
    # A conversation stored as JSON text (e.g. a CSV cell), and multimodal-style content parts.
    assert fm.extract({"messages": json.dumps(conv[1:3])}) == Sample(conv[1:2], "A1")
    parts = [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image"}]},
             {"role": "assistant", "content": "ok"}]
    assert fm.extract({"messages": parts}) == Sample([{"role": "user", "content": "look"}], "ok")
    # No assistant turn: an empty response (the Renderer skips it).
    assert fm.extract({"messages": conv[:2]}) == Sample(conv[:2], "")


def test_extract_errors_name_the_field_and_list_the_fields_present():
    fm = parse_fields("prompt=question,response=answer")
    with pytest.raises(DataError, match=r"^missing field 'question' \(the prompt\); fields present: query, answer$"):
        fm.extract({"query": "q", "answer": "a"})
    rec = Record(row_id=4, source="d.jsonl", line=7, data={"q": 1}, error=None)
    with pytest.raises(DataError, match=r"^d.jsonl:7: missing field 'question'.*fields present: q$"):
        fm.extract_record(rec)
    bad = Record(row_id=5, source="d.jsonl", line=8, data=None, error="invalid JSON: Expecting value at column 1")
    with pytest.raises(DataError, match=r"^d.jsonl:8: invalid JSON: Expecting value at column 1$"):
        fm.extract_record(bad)
    with pytest.raises(DataError, match=r"field 'messages' must be a list of \{role, content\} turns, got int"):
        detect_fields(["messages"]).extract({"messages": 3})
    with pytest.raises(DataError, match=r"turn 1 has no 'role'"):
        detect_fields(["messages"]).extract({"messages": [{"role": "user", "content": "a"}, {"content": "b"}]})
    with pytest.raises(DataError, match="is not in the data; fields present: question, answer"):
        parse_fields("prompt=problem,response=answer").check_columns(["question", "answer"])
    parse_fields("prompt=question,response=answer,system=sys").check_columns(["question", "answer"])


def test_none_or_missing_response_is_empty():
    fm = parse_fields("prompt=q,response=a")
    assert fm.extract({"q": "x", "a": None}).response == ""
    assert fm.extract({"q": "x"}).response == ""
    assert fm.extract({"q": 3, "a": [1, 2]}) == Sample([{"role": "user", "content": "3"}], "[1, 2]")
