"""kill -9 during `prism score`, then the same command again: no finished shard is recomputed, no row lost
or duplicated, and samples.parquet / summary.json equal those of an uninterrupted run bit for bit
(except the timings)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from prism_kernels import _backends

pytest.importorskip("transformers")
pq = pytest.importorskip("pyarrow.parquet")

from tiny_models import GSM8K_TRAIN, gsm8k_records, tiny_causal_lm, tiny_tokenizer  # noqa: E402

pytestmark = [pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason=f"GSM8K not found at {GSM8K_TRAIN}"),
              pytest.mark.skipif(_backends.compiled() is None, reason="prism_kernels._C not built")]

REPO = Path(__file__).resolve().parent.parent
TIMING_KEYS = {"seconds", "samples_per_s", "timing"}


def _cmd(data, model, out):
    return [sys.executable, "-m", "prism_kernels", "score", str(data), "--model", str(model), "--out", str(out),
            "--k", "32", "--shard-rows", "4", "--batch-tokens", "1024", "--max-length", "160", "--quiet"]


def test_kill_9_then_resume_is_bit_identical(tmp_path):
    from prism_kernels.cli import main

    tok = tiny_tokenizer(tmp_path)
    model = tiny_causal_lm(tmp_path, tok)
    data = tmp_path / "g.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in gsm8k_records(40)))
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(_cmd(data, model, run), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    manifest = run / "manifest.json"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if manifest.exists() and json.loads(manifest.read_text())["shards"]:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)  # right after the first shard landed
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = {int(s) for s in json.loads(manifest.read_text())["shards"]}
    assert 1 <= len(done) < 10 and not (run / "summary.json").exists()
    stamps = {s: (run / "sketches" / f"shard-{s:05d}.safetensors").stat().st_mtime_ns for s in done}

    stale = run / "sketches" / ".shard-00009.safetensors.x1y2.tmp"  # what a kill inside a write leaves
    stale.write_bytes(b"half a file")
    # the same command again (in this process: the same code path as the console script)
    assert main([a for a in _cmd(data, model, run)[3:]]) == 0
    for s, stamp in stamps.items():  # finished shards were not recomputed
        assert (run / "sketches" / f"shard-{s:05d}.safetensors").stat().st_mtime_ns == stamp
    assert not stale.exists() and not list((run / "sketches").glob(".*.tmp")) and not list(run.glob(".*.tmp"))

    ref = tmp_path / "ref"
    assert main([a for a in _cmd(data, model, ref)[3:]]) == 0
    resumed, clean = pq.read_table(run / "samples.parquet"), pq.read_table(ref / "samples.parquet")
    assert resumed.column("row_id").to_pylist() == list(range(40))
    assert resumed.equals(clean)
    s1 = json.loads((run / "summary.json").read_text())
    s2 = json.loads((ref / "summary.json").read_text())
    def numbers(s):
        return {k: v for k, v in s.items() if k not in TIMING_KEYS}

    assert numbers(s1) == numbers(s2)
    assert (run / "state.safetensors").read_bytes() == (ref / "state.safetensors").read_bytes()

    # the interval: 10 shards >= 8, so a percentile bootstrap over shards; recomputed here from the sketches
    # (each resample as row weights = shard multiplicities, scored by pk.vendi_score: another route)
    import numpy as np
    import torch
    from safetensors.torch import load_file

    import prism_kernels as pk
    from prism_kernels.score.finish import BOOTSTRAP_RESAMPLES

    lo, hi = s2["ci95"]["q1"]
    shards = [load_file(ref / "sketches" / f"shard-{i:05d}.safetensors")["sketches"] for i in range(10)]
    x = torch.cat(shards).double()
    draws = np.random.default_rng(0).integers(0, 10, size=(BOOTSTRAP_RESAMPLES, 10))
    values = []
    for row in draws:
        mult = np.bincount(row, minlength=10)
        w = torch.cat([torch.full((len(sh),), float(m), dtype=torch.float64) for sh, m in zip(shards, mult)])
        values.append(pk.vendi_score(x, 1, weights=w, precision="exact"))
    assert [lo, hi] == pytest.approx(list(np.percentile(values, [2.5, 97.5])), rel=1e-9)
    assert 1.0 < lo < hi <= 32.0
