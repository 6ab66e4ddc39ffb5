"""Issue 10, item 5 (second check): on the demo, three Prismatic rounds raise the pool's G-Vendi, measured
against accepting the same number of candidates at random.

NOT MET YET (measured here): the rounds raise G-Vendi (27.49 -> 28.48) but only as much as random acceptance of
as many candidates (mean 28.477, the loop beats 5 of 10 draws): the filter keeps 4 of ~90 candidates, since
candidates from unseen templates are assigned to the nearest pool cluster, often a large one. The test asserts
what holds (G-Vendi rises; the logged G-Vendi equals the recomputed one) and prints the comparison.

The pool is the demo's 4-template subset (prism_kernels.demo.problems.demo_ladder), the proxy the shipped demo
LM (prism_kernels/assets/demo-lm), the generator a scripted one (the real Generator interface and request
cache) that writes problems from all 64 demo templates. The loop stores every new candidate's sketch and fate
in its round files; the random baseline accepts, round by round, as many of that round's sketched candidates
as the loop kept, drawn uniformly (10 draws).
"""

import argparse
import json
import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

import prism_kernels as pk
from prism_kernels import _backends

pytest.importorskip("transformers")
pytest.importorskip("faiss")
pytest.importorskip("datasketch")

from prism_kernels.demo import DEMO_MODEL_DIR  # noqa: E402

pytestmark = [pytest.mark.skipif(not (DEMO_MODEL_DIR / "model.safetensors").exists(),
                                 reason=f"the demo proxy is not at {DEMO_MODEL_DIR}"),
              pytest.mark.skipif(_backends.compiled() is None, reason="prism_kernels._C not built")]

ROUNDS = 3


def _scripted(request) -> str:
    from prism_kernels.demo.problems import sample_problems
    from prism_kernels.synth import format_examples

    problem = sample_problems(range(64), 1, random.Random(f"scripted:{request.seed}"))[0]
    return format_examples([problem])


def test_three_rounds_raise_pool_gvendi_compared_with_random_acceptance(tmp_path):
    import torch
    from safetensors.numpy import load_file

    from prism_kernels.demo.problems import demo_ladder
    from prism_kernels.synth import CallableGenerator, RequestCache
    from prism_kernels.synth.prismatic import PrismaticRun, add_prismatic_arguments

    torch.set_num_threads(1)
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in demo_ladder(128, (4,))[4]))
    out = tmp_path / "run"
    args = add_prismatic_arguments(argparse.ArgumentParser()).parse_args([
        "--pool", str(pool), "--model", str(DEMO_MODEL_DIR), "--k", "1024", "--kind", "sparse", "--device", "cpu",
        "--max-length", "256", "--shard-rows", "64", "--generator", "scripted", "--rounds", str(ROUNDS),
        "--per-round", "32", "--out", str(out), "--quiet"])
    gen = CallableGenerator(_scripted, "scripted-demo", cache=RequestCache(tmp_path / "cache.sqlite"))
    PrismaticRun(args, generator=gen).run()

    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2, 3] and sum(r["kept"] for r in rounds) > 0
    shards = sorted((out / "pool_score" / "sketches").glob("shard-*.safetensors"))
    base = np.concatenate([load_file(str(p))["sketches"] for p in shards])
    files = [load_file(str(out / "rounds" / f"round-{r:05d}.safetensors")) for r in range(1, ROUNDS + 1)]
    loop = pk.vendi_score(np.concatenate([base] + [f["kept_sketches"] for f in files]))
    assert abs(loop - rounds[-1]["pool_gvendi"]) < 1e-5 * loop
    draws = []
    for t in range(10):
        rng = np.random.default_rng(t)
        picked = [base]
        for f in files:
            sketched = np.flatnonzero(f["candidate_fate"] != 3)
            n_kept = int((f["candidate_fate"] == 0).sum())
            picked.append(f["candidate_sketches"][rng.choice(sketched, n_kept, replace=False)])
        draws.append(pk.vendi_score(np.concatenate(picked)))
    initial = json.loads((out / "manifest.json").read_text())["initial_pool_gvendi"]
    print(f"\ndemo pool G-Vendi {initial:.3f} -> {loop:.3f} after {ROUNDS} rounds (kept "
          f"{[r['kept'] for r in rounds]}); random acceptance of as many: mean {np.mean(draws):.3f} "
          f"(min {min(draws):.3f}, max {max(draws):.3f}); beats {sum(loop > d for d in draws)}/10")
    assert loop > initial
