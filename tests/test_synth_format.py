"""The loops' example format: round trips (also property-based), the variations real LLMs write, counting of
unparsable blocks, and real-looking responses delivered by a loopback OpenAI-compatible server through the
real HTTP client."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from prism_kernels.synth.format import Example, format_examples, parse_examples

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openai_server import OpenAIServer  # noqa: E402

GSM_STYLE = Example(
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72",
    "72")


def test_format_then_parse_round_trips():
    examples = [GSM_STYLE, Example("What is 2 + 3?", "2 + 3 = 5.", "5"),
                Example("A list:\n- one\n- two\nHow many items?", "Two items: one, two.\n\nSo 2.", "2")]
    text = format_examples(examples)
    assert text.count("\n---\n") == 2 and text.count("### <final_answer>") == 3
    assert text.startswith("### Question\n")
    assert parse_examples(text) == (examples, 0)
    assert format_examples([e.to_dict() for e in examples]) == text


def test_format_rejects_incomplete_examples():
    with pytest.raises(ValueError, match="example 1 has no string field"):
        format_examples([GSM_STYLE, {"question": "q", "answer": "a"}])
    with pytest.raises(ValueError, match="example 0 has an empty final_answer"):
        format_examples([Example("q", "a", "  ")])
    with pytest.raises(ValueError, match="no examples"):
        format_examples([])


def test_parse_tolerates_what_llms_write():
    text = (
        "```markdown\n"
        "Sure! Here are three new problems:\n\n"
        "**Question 1:** Tom has 3 apples and buys 2 more. How many apples does he have?\n\n"
        "**Answer:**\nHe has 3 + 2 = 5 apples.\nAnswer: 5 apples\n\n"
        "**Final Answer:** **5**\n\n"
        "I hope this helps.\n\n"
        "***\n\n"
        "## Problem 2\r\n"
        "Sara has 10 pears and sells 4.\r\n\r\n"
        "## Solution\r\n"
        "10 - 4 = 6\r\n\r\n"
        "### <final_answer>\r\n"
        "`6`\r\n"
        "### Question 3:\n"
        "A box holds 4 eggs. How many eggs are in 3 boxes?\n"
        "### Answer: 4 * 3 = 12\n"
        "### Final answer\n"
        "12\n\n"
        "### Question\nWhat is 9 - 4?\n### Answer\n9 - 4 = 5\n<final_answer>5</final_answer>\n"
        "Let me know if you want more!\n"
        "```\n")
    examples, bad = parse_examples(text)
    assert bad == 0
    assert examples == [
        Example("Tom has 3 apples and buys 2 more. How many apples does he have?",
                "He has 3 + 2 = 5 apples.\nAnswer: 5 apples", "5"),
        Example("Sara has 10 pears and sells 4.", "10 - 4 = 6", "6"),
        Example("A box holds 4 eggs. How many eggs are in 3 boxes?", "4 * 3 = 12", "12"),
        Example("What is 9 - 4?", "9 - 4 = 5", "5")]


@pytest.mark.parametrize("block, why", [
    ("### Question\nq\n\n### Answer\na\n", "no final answer"),
    ("### Question\n\n### Answer\na\n### <final_answer>\n1\n", "empty question"),
    ("### Question\nq\n### <final_answer>\n1\n", "no answer"),
    ("### Question\nq\n### Answer\na\n### Answer\nb\n### <final_answer>\n1\n", "answer given twice"),
    ("### Answer\na\n### <final_answer>\n1\n", "no question"),
    ("### Question\nq\n### Answer\na\n### <final_answer>\n\n", "empty final answer"),
])
def test_incomplete_blocks_are_counted(block, why):
    good = format_examples([Example("q0", "a0", "0")])
    examples, bad = parse_examples(f"{good}\n---\n{block}---\n{good}")
    assert bad == 1, why
    assert examples == [Example("q0", "a0", "0")] * 2


def test_counting_free_text_and_chatter():
    good = format_examples([Example("q", "a", "1")])
    # Free text between two separators is a block in some other shape: unparsable.
    assert parse_examples(f"{good}\n---\nJohn has five cats, how many legs?\n---\n{good}")[1] == 1
    # A preamble, closing remarks and blank blocks are not.
    assert parse_examples(f"Here you go:\n---\n{good}\n---\n\n---\n{good}\n---\nEnjoy!") == (
        [Example("q", "a", "1")] * 2, 0)
    assert parse_examples("I cannot help with that.") == ([], 0)
    assert parse_examples("") == ([], 0)
    # A title line is not a heading ("### Question about trains" has no colon and text after the name).
    assert parse_examples("### Question about trains\n### Question\nq\n### Answer\na\n### <final_answer>\n2") \
        == ([Example("q", "a", "2")], 0)
    with pytest.raises(TypeError):
        parse_examples(None)


def test_property_round_trip():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    # Text without the characters that make headings or separators (#, *, -, _, :, `) round-trips exactly.
    chars = st.characters(blacklist_characters="#*-_:`\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
                          blacklist_categories=("Cs", "Cc"))
    line = st.text(chars, min_size=1, max_size=30).map(str.strip).filter(bool)
    para = st.lists(line, min_size=1, max_size=4).map("\n".join)
    example = st.builds(Example, para, para, line)

    @hypothesis.given(st.lists(example, min_size=1, max_size=4))
    @hypothesis.settings(max_examples=150, deadline=None)
    def check(examples):
        assert parse_examples(format_examples(examples)) == (examples, 0)

    check()


def test_responses_through_the_http_client():
    """Scripted real-looking generations, served over HTTP and read with the real client, then parsed."""
    from prism_kernels.synth.generators import GenerationRequest, OpenAIGenerator

    replies = {
        "two": ("Here are two new problems in the requested format.\n\n### Question\nA farmer has 12 cows and "
                "buys 5 more. How many cows?\n\n### Answer\n12 + 5 = 17\n\n### <final_answer>\n17\n\n---\n\n"
                "### Question\nIf 3 pens cost $6, what does 1 pen cost?\n\n### Answer\n6 / 3 = 2 dollars.\n\n"
                "### <final_answer>\n$2\n"),
        "broken": ("### Question\nA train leaves at 3pm.\n\n### Answer\nIt arrives at 5pm.\n\n---\n\n"
                   "**Question:** What is 7 times 8?\n**Answer:** 56\n**Final answer:** 56"),
        "refusal": "I'm sorry, but I can't produce more problems right now.",
    }
    with OpenAIServer(responder=lambda body: replies[body["messages"][-1]["content"]]) as s:
        gens = OpenAIGenerator(s.url, s.model_name, timeout=10).generate(
            [GenerationRequest([{"role": "user", "content": k}]) for k in replies])
    parsed = [parse_examples(g.text) for g in gens]
    assert parsed[0] == ([Example("A farmer has 12 cows and buys 5 more. How many cows?", "12 + 5 = 17", "17"),
                          Example("If 3 pens cost $6, what does 1 pen cost?", "6 / 3 = 2 dollars.", "$2")], 0)
    assert parsed[1] == ([Example("What is 7 times 8?", "56", "56")], 1)
    assert parsed[2] == ([], 0)
