"""The demo's word-problem generator: deterministic, equal-size subsets holding exactly the requested
templates, and every worked step re-checked by an independent arithmetic parser."""

import json
import re

import pytest

from prism_kernels.demo import problems

STEP = re.compile(r"\$?(\d+)((?: [x+\-/] \$?\d+)+) = \$?(\d+)")


def check_arithmetic(text: str) -> int:
    """Evaluates every ``a op b [op c ...] = r`` in ``text`` left to right (as the steps are written: one
    operator kind per chain) and fails on a wrong result; returns how many were checked."""
    n = 0
    for m in STEP.finditer(text):
        value = int(m.group(1))
        for op, num in re.findall(r" ([x+\-/]) \$?(\d+)", m.group(2)):
            num = int(num)
            if op == "+":
                value += num
            elif op == "-":
                value -= num
            elif op == "x":
                value *= num
            else:
                assert value % num == 0, f"inexact division in {m.group(0)!r}"
                value //= num
        assert value == int(m.group(3)), f"wrong step {m.group(0)!r} in {text!r}"
        n += 1
    return n


def skeleton(question: str) -> str:
    """The question with numbers and names blanked: two templates with one skeleton would be one story."""
    text = re.sub(r"\d+", "#", question)
    for name in problems.NAMES + problems.OTHERS:
        text = text.replace(name, "@")
    return text


def test_templates_are_many_and_structurally_different():
    assert len(problems.TEMPLATES) >= 64
    rng = problems.random.Random(0)
    samples = [t.sample(rng) for t in problems.TEMPLATES]
    assert len({skeleton(s["question"]) for s in samples}) == len(problems.TEMPLATES)
    steps = {len(s["answer"].splitlines()) - 1 for s in samples}
    assert {1, 2, 3, 4} <= steps  # one to four worked steps
    assert len({t.name for t in problems.TEMPLATES}) == len(problems.TEMPLATES)


@pytest.mark.parametrize("template", range(len(problems.TEMPLATES)))
def test_every_step_and_answer_is_right(template):
    rng = problems.random.Random(template)
    for _ in range(40):
        p = problems.TEMPLATES[template].sample(rng)
        assert p["answer"].splitlines()[-1] == f"Answer: {p['final_answer']}"
        assert int(p["final_answer"]) >= 0
        assert not re.search(r"[{}]|(^|[\s$])-\d", p["question"] + p["answer"]), p
        # the final answer is the result of some worked step (or a number read off the question)
        results = [m.group(3) for m in STEP.finditer(p["answer"])]
        assert p["final_answer"] in results or p["final_answer"] in re.findall(r"\d+", p["answer"].splitlines()[-2])
        assert check_arithmetic(p["answer"]) >= 1


def test_ladder_is_deterministic_and_equal_size():
    a = problems.demo_ladder(96, seed=3)
    b = problems.demo_ladder(96, seed=3)
    c = problems.demo_ladder(96, seed=4)
    assert a == b
    assert a[64] != c[64] and a[1] != c[1]
    assert list(a) == [1, 4, 16, 64]
    for count, rows in a.items():
        assert len(rows) == 96
        assert {r["template"] for r in rows} == set(range(count))  # exactly the first `count` templates
        assert len({r["question"] for r in rows}) == 96  # no repeated question
        per = [sum(r["template"] == t for r in rows) for t in range(count)]
        assert max(per) - min(per) <= 1  # spread evenly


def test_subsets_do_not_depend_on_the_other_counts():
    assert problems.demo_ladder(64, (16,), seed=1)[16] == problems.demo_ladder(64, seed=1)[16]


def test_write_ladder_jsonl(tmp_path):
    paths = problems.write_ladder(tmp_path, 64, seed=2)
    expected = problems.demo_ladder(64, seed=2)
    for count, path in paths.items():
        assert path.name == f"templates-{count:02d}.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert rows == expected[count]
        assert set(rows[0]) == {"question", "answer", "final_answer", "template"}


def test_training_corpus_covers_every_template():
    corpus = problems.training_corpus(640, seed=0)
    assert corpus == problems.training_corpus(640, seed=0)
    assert [sum(r["template"] == t for r in corpus) for t in range(64)] == [10] * 64


@pytest.mark.parametrize("kwargs, needle", [
    (dict(n_per_subset=32), "n_per_subset=32"),
    (dict(n_per_subset=0), "n_per_subset"),
    (dict(n_per_subset=64, template_counts=(1, 65)), "template_counts"),
    (dict(n_per_subset=64, template_counts=()), "template_counts"),
])
def test_bad_arguments_are_named(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        problems.demo_ladder(**kwargs)


def test_demo_pool_is_skewed_and_deterministic():
    from collections import Counter

    rows = problems.demo_pool(4, 112, 8, 2, seed=0)
    counts = Counter(r["template"] for r in rows)
    assert len(rows) == 128 and set(counts) == set(range(12))
    assert all(counts[t] == 28 for t in range(4)) and all(counts[t] == 2 for t in range(4, 12))
    assert len({r["question"] for r in rows}) == 128  # distinct problems
    assert rows == problems.demo_pool(4, 112, 8, 2, seed=0) and rows != problems.demo_pool(4, 112, 8, 2, seed=1)
    with pytest.raises(ValueError, match="dense_rows"):
        problems.demo_pool(dense_rows=0)
    with pytest.raises(ValueError, match="dense_templates \\+ rare_templates"):
        problems.demo_pool(dense_templates=60, rare_templates=8)
