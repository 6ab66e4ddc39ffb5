"""Real data: at equal size, G-Vendi of `prism score` rises with the number of distinct GSM8K problems.

Five datasets of 200 rows each are drawn from 1, 4, 16, 64 and 200 distinct GSM8K training problems; a
problem used several times appears once as it is and otherwise with its numbers changed (every number of
the question and the answer mapped to another, consistently within one copy). The proxy is a tiny Qwen2
built from a config here. More distinct problems must give a strictly higher G-Vendi (q = 1). (q = 2,
which weighs the largest eigenvalues most, need not: measured here it rises to 64 problems and dips at 200.)
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_models import GSM8K_TRAIN, gsm8k_records, tiny_causal_lm, tiny_tokenizer  # noqa: E402

pytest.importorskip("pyarrow")
pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason=f"GSM8K not found at {GSM8K_TRAIN}")

ROWS = 200
DISTINCT = (1, 4, 16, 64, 200)
NUMBER = re.compile(r"\d+")


def change_numbers(record: dict, rng: random.Random) -> dict:
    """The record with every number replaced by another (the same number maps to the same new one)."""
    mapping: dict[str, str] = {}

    def new(match: re.Match) -> str:
        old = match.group(0)
        if old not in mapping:
            mapping[old] = str(rng.randint(2, 10 ** max(1, len(old)) + 9))
        return mapping[old]

    return {"question": NUMBER.sub(new, record["question"]), "answer": NUMBER.sub(new, record["answer"])}


def ladder_rows(problems: list[dict], distinct: int, seed: int = 0) -> list[dict]:
    """ROWS rows from the first `distinct` problems, round-robin; repeats get their numbers changed."""
    rng = random.Random(seed * 1000 + distinct)
    rows = []
    for i in range(ROWS):
        base = problems[i % distinct]
        rows.append(dict(base) if i < distinct else change_numbers(base, rng))
    return rows


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    root = tmp_path_factory.mktemp("ladder-proxy")
    return tiny_causal_lm(root, tiny_tokenizer(root), hidden_size=32)


def test_gvendi_rises_with_distinct_gsm8k_problems(proxy, tmp_path):
    from prism_kernels.score import score_dataset

    problems = gsm8k_records(2000)
    random.Random(0).shuffle(problems)
    problems = problems[:max(DISTINCT)]
    scores = {}
    for distinct in DISTINCT:
        path = tmp_path / f"distinct-{distinct}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in ladder_rows(problems, distinct)))
        summary = score_dataset([path], tmp_path / f"run-{distinct}", model=str(proxy), k=256, kind="rademacher",
                                seed=0, max_length=256, shard_rows=ROWS, device="cpu", dtype="float32",
                                progress=False).summary
        assert summary["n"] == ROWS and not summary["skipped"]
        scores[distinct] = summary["gvendi"]
    q1 = [scores[d]["q1"] for d in DISTINCT]
    print("\nG-Vendi q=1 by distinct problems:", dict(zip(DISTINCT, [round(v, 2) for v in q1])))
    assert all(a < b for a, b in zip(q1, q1[1:])), f"q=1 does not rise strictly: {q1}"
