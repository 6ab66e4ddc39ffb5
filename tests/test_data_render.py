"""prism_kernels.data.Renderer with real tokenizers trained on GSM8K (tests/tiny_models.py): the response
mask checked by decoding, against the chat template's own text; truncation; batching; skips."""

import json

import pytest

from prism_kernels.data import DataError, Renderer, Sample, detect_fields, open_dataset

from tiny_models import GSM8K_TRAIN, QWEN25_CHAT_TEMPLATE, gsm8k_records, tiny_tokenizer

pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason=f"GSM8K not found at {GSM8K_TRAIN}")


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    d = tmp_path_factory.mktemp("toks")
    return {"chat": tiny_tokenizer(d, chat_template=True), "plain": tiny_tokenizer(d, chat_template=False),
            "bos": tiny_tokenizer(d, chat_template=False, bos=True)}


@pytest.fixture(scope="module")
def samples():
    fm = detect_fields(["question", "answer"])
    return [fm.extract(r) for r in gsm8k_records(40)]


def _decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def test_chat_template_mask_covers_the_assistant_content_and_end_of_turn(toks, samples):
    tok = toks["chat"]
    multi = Sample([{"role": "system", "content": "Solve it."}, {"role": "user", "content": "1+1?"},
                    {"role": "assistant", "content": "2"}, {"role": "user", "content": "And 2+2?"}], "4, since 2+2=4.")
    for s in samples[:10] + [multi]:
        r = Renderer(tok, max_length=4096).render(s)
        assert r.skipped_reason is None and not r.truncated
        assert _decode(tok, r.input_ids[r.response_start:]) == s.response + "<|im_end|>\n"
        # The prompt part is the template's own generation prompt, the whole is the template's conversation.
        assert _decode(tok, r.input_ids[:r.response_start]) == tok.apply_chat_template(
            s.messages, tokenize=False, add_generation_prompt=True)
        assert _decode(tok, r.input_ids) == tok.apply_chat_template(
            s.messages + [{"role": "assistant", "content": s.response}], tokenize=False)
        assert _decode(tok, r.input_ids[:r.response_start]).endswith("<|im_start|>assistant\n")
        assert r.n_tokens == len(r.input_ids) and r.n_response_tokens == r.n_tokens - r.response_start


def test_template_text_is_the_qwen25_one(toks):
    # Independent check of the template we test against: Qwen2.5's rendering of a one-turn chat.
    text = toks["chat"].apply_chat_template([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
                                            tokenize=False)
    assert toks["chat"].chat_template == QWEN25_CHAT_TEMPLATE
    assert text == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                    "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n")


def test_without_template_prompt_newline_response_eos(toks, samples):
    for name, bos in (("plain", []), ("bos", ["<s>"])):
        tok = toks[name]
        for s in samples[:10]:
            r = Renderer(tok, max_length=4096).render(s)
            assert _decode(tok, r.input_ids[r.response_start:]) == s.response + "<|endoftext|>"
            assert _decode(tok, r.input_ids[:r.response_start]) == "".join(bos) + s.messages[0]["content"] + "\n"
            assert r.input_ids[-1] == tok.eos_token_id
            assert (r.input_ids[0] == tok.bos_token_id) == bool(bos)
    # A template tokenizer can be rendered plainly on request.
    r = Renderer(toks["chat"], chat_template=False).render(samples[0])
    assert _decode(toks["chat"], r.input_ids[r.response_start:]) == samples[0].response + "<|im_end|>"
    with pytest.raises(DataError, match="has no chat template"):
        Renderer(toks["plain"], chat_template=True)


@pytest.mark.parametrize("kind", ["chat", "plain", "bos"])
def test_truncation_cuts_the_prompt_from_the_left_and_keeps_the_response(toks, samples, kind):
    tok = toks[kind]
    full = Renderer(tok, max_length=100_000).render_many(samples[:12])
    for s, f in zip(samples[:12], full):
        prompt, response = f.input_ids[:f.response_start], f.input_ids[f.response_start:]
        for limit in (f.n_tokens, f.n_tokens - 1, len(response) + 1, len(response), len(response) - 3, 2):
            r = Renderer(tok, max_length=limit).render(s)
            assert r.n_tokens == min(limit, f.n_tokens) and r.truncated == (limit < f.n_tokens)
            if limit >= len(response) + 1:  # the whole response and the prompt's tail
                assert r.input_ids[r.response_start:] == response
                assert r.input_ids[:r.response_start] == prompt[len(prompt) - (limit - len(response)):]
            else:  # the prompt's last token, then the response's head
                assert r.input_ids == prompt[-1:] + response[:limit - 1] and r.response_start == 1
    for bad in (1, 0, 2.5, "64", True):
        with pytest.raises(DataError, match="max_length must be an integer >= 2"):
            Renderer(tok, max_length=bad)


def test_render_many_equals_render(toks, samples):
    batch = samples + [Sample([{"role": "user", "content": "q"}], ""), Sample([{"role": "user", "content": "q"}], " \n")]
    for tok in toks.values():
        renderer = Renderer(tok, max_length=200)
        assert renderer.render_many(batch) == [renderer.render(s) for s in batch]
        assert renderer.render_many([]) == []


def test_empty_response_is_skipped(toks):
    fm = detect_fields(["question", "answer"])
    for tok in toks.values():
        r = Renderer(tok).render(fm.extract({"question": "What?", "answer": None}))
        assert r.skipped_reason == "empty_response" and r.input_ids == [] and r.n_tokens == 0


def test_template_errors_skip_the_sample_and_a_bad_template_is_refused(tmp_path, toks, samples):
    tok = tiny_tokenizer(tmp_path, chat_template=True)
    tok.chat_template = ("{% for m in messages %}{% if m.role == 'assistant' and loop.first %}"
                         "{{ raise_exception('conversation must start with a user turn') }}{% endif %}"
                         "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    batch = [samples[0], Sample([], "orphan answer"), samples[1]]
    with pytest.warns(UserWarning, match="conversation must start with a user turn"):
        out = Renderer(tok).render_many(batch)
    assert [r.skipped_reason for r in out] == [None, "template_error", None]
    assert out[0] == Renderer(tok).render(samples[0])
    # A template whose generation prompt is not a prefix of the full conversation cannot be masked.
    tok.chat_template = ("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
                         "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    with pytest.raises(DataError, match="not render the prompt with add_generation_prompt=True as a prefix"):
        Renderer(tok).render(samples[0])


def test_same_rendering_from_every_file_format(tmp_path, toks):
    pa = pytest.importorskip("pyarrow")
    pq, pacsv = pytest.importorskip("pyarrow.parquet"), pytest.importorskip("pyarrow.csv")
    datasets = pytest.importorskip("datasets")
    rows = gsm8k_records(60)
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=16)
    pacsv.write_csv(table, tmp_path / "a.csv")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    renderer = Renderer(toks["chat"], max_length=256)
    results = []
    for name in ("a.jsonl", "a.parquet", "a.csv", "hf"):
        ds = open_dataset([str(tmp_path / name)])
        fm = detect_fields(ds.columns())
        got_samples, got_rendered = [], []
        for batch in ds.iter_records(batch_rows=25):
            s = [fm.extract_record(r) for r in batch]
            got_samples += s
            got_rendered += renderer.render_many(s)
        results.append((got_samples, got_rendered))
    assert all(r == results[0] for r in results[1:])
    assert len(results[0][0]) == 60 and any(r.truncated for r in results[0][1])


def test_bos_written_by_the_template_appears_once(tmp_path, samples):
    tok = tiny_tokenizer(tmp_path, chat_template=True, bos=True)
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    r = Renderer(tok).render(samples[0])
    assert r.input_ids[0] == tok.bos_token_id and r.input_ids.count(tok.bos_token_id) == 1
    assert _decode(tok, r.input_ids[r.response_start:]) == samples[0].response + "<|im_end|>"


def test_rust_backend_fast_path_equals_the_tokenizer_call(toks, samples):
    for tok in toks.values():
        fast = Renderer(tok, max_length=300)
        assert fast._backend is not None  # the fast path is in use for these tokenizers
        slow = Renderer(tok, max_length=300)
        slow._backend = None  # the transformers wrapper
        assert fast.render_many(samples) == slow.render_many(samples)
