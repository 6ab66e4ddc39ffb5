"""The Prismatic loop end to end against the real loopback OpenAI-compatible server (tests/openai_server.py)
with scripted replies, a tiny Qwen2 proxy built from a config, and GSM8K rows as the pool; then kill -9 in
the middle of a run and a resume that repeats no finished request and ends with the same outputs.

The scripted generator writes templated problems whose numbers come from the request's seed; some replies are
unparsable, some copy a few-shot seed (duplicates), some state a wrong final answer (the answer check must
reject those: the scripted solver adds the two numbers, wrongly for one sample in three).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from prism_kernels import _backends

pytest.importorskip("transformers")
pytest.importorskip("faiss")
pytest.importorskip("datasketch")
pytest.importorskip("math_verify")
pytest.importorskip("httpx")

from openai_server import OpenAIServer  # noqa: E402
from tiny_models import GSM8K_TRAIN, gsm8k_records, tiny_causal_lm, tiny_tokenizer  # noqa: E402

import prism_kernels as pk  # noqa: E402
from prism_kernels.synth.prismatic import ROUND_KEYS, main  # noqa: E402

pytestmark = [pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason=f"GSM8K not found at {GSM8K_TRAIN}"),
              pytest.mark.skipif(_backends.compiled() is None, reason="prism_kernels._C not built")]

REPO = Path(__file__).resolve().parent.parent
NAMES = ["Ann", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal"]
ITEMS = ["apples", "pens", "cards", "shells", "coins", "stamps"]
ROUNDS, PER_ROUND, N_CHECK = 3, 10, 3


def responder(body: dict) -> str:
    msg = body["messages"][-1]["content"]
    seed = int(body.get("seed", 0))
    if msg.startswith("Solve this problem"):
        question = msg.split("### Question", 1)[1].split("Reply in", 1)[0]
        a, b = (int(x) for x in re.findall(r"\d+", question)[:2])
        return f"### Answer\n{a} + {b}.\n\n### <final_answer>\n{a + b + (1 if seed % 3 == 0 else 0)}"
    if seed % 7 == 0:
        return "Sorry, I cannot write that."  # unparsable
    if seed % 7 == 1:  # a copy of the first few-shot seed: an exact duplicate of a pool row
        first = re.search(r"### Question\n(.*?)\n\n### Answer\n(.*?)\n\n### <final_answer>\n(.*?)\n", msg, re.S)
        return f"### Question\n{first.group(1)}\n\n### Answer\n{first.group(2)}\n\n### <final_answer>\n{first.group(3)}"
    a, b = seed % 50 + 2, (seed // 50) % 40 + 3
    name, item = NAMES[seed % 8], ITEMS[(seed // 8) % 6]
    final = a + b + (1 if seed % 3 == 0 else 0)  # a wrong stated answer, one problem in three
    return (f"Here is a new one.\n\n### Question\n{name} has {a} {item} and finds {b} more {item} on day {seed % 97}. "
            f"How many {item} does {name} have now?\n\n### Answer\n{name} has {a} + {b} = {a + b} {item}.\n\n"
            f"### <final_answer>\n{final}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prismatic_loop")
    tok = tiny_tokenizer(tmp)
    model = tiny_causal_lm(tmp, tok)
    pool = tmp / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in gsm8k_records(48)))
    return tmp, model, pool


def _argv(server, out, pool=None, score_run=None, model=None):
    src = ["--pool", str(pool), "--model", str(model)] if pool else ["--score-run", str(score_run)]
    return src + ["--k", "64", "--max-length", "256", "--shard-rows", "16", "--device", "cpu",
                  "--generator", server.url, "--generator-model", "tiny-test", "--concurrency", "2",
                  "--rounds", str(ROUNDS), "--per-round", str(PER_ROUND), "--answer-check", str(N_CHECK),
                  "--out", str(out), "--quiet"]


def _read(out):
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    synthetic = [json.loads(line) for line in (out / "synthetic.jsonl").read_text().splitlines()]
    return rounds, synthetic


@pytest.fixture(scope="module")
def full_run(setup):
    tmp, model, pool = setup
    out = tmp / "run_full"
    with OpenAIServer(responder=responder) as server:
        assert main(_argv(server, out, pool=pool, model=model)) == 0
        completed = server.completed
    return out, completed


def test_rounds_and_samples_follow_the_loop(setup, full_run):
    from safetensors.numpy import load_file

    out, completed = full_run
    rounds, synthetic = _read(out)
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    assert all(tuple(r) == ROUND_KEYS for r in rounds)
    manifest = json.loads((out / "manifest.json").read_text())
    size = manifest["initial_pool_size"]
    assert size == 48
    for r in rounds:
        assert r["generated"] == PER_ROUND
        assert r["parsed"] == r["duplicates"] + r["rejected_filter"] + r["rejected_answer_check"] + r["kept"]
        size += r["kept"]
        assert r["pool_size"] == size
    assert sum(r["duplicates"] for r in rounds) > 0           # the copied seeds were caught
    assert sum(r["rejected_answer_check"] for r in rounds) > 0  # wrong stated answers were caught
    assert sum(r["kept"] for r in rounds) == len(synthetic) > 0
    pool_questions = {json.loads(line)["question"] for line in (setup[2]).read_text().splitlines()}
    for s in synthetic:
        assert {"question", "answer", "final_answer", "round", "seeds", "cluster", "cluster_size",
                "cluster_size_before", "generator", "answer_agreement"} <= set(s)
        assert s["question"] not in pool_questions and s["generator"] == "tiny-test"
        a, b = (int(x) for x in re.findall(r"\d+", s["question"])[:2])
        assert int(s["final_answer"]) == a + b          # only correct answers survive the check
        assert s["answer_agreement"] > 0.5 and len(s["seeds"]) == 3
    assert len({s["question"] for s in synthetic}) == len(synthetic)

    # The filter's rule, replayed from the round files: within a round each cluster starts at its size before
    # the round and grows by one with every candidate the filter accepts; a candidate passes iff its cluster's
    # count is below the round's median.
    for r in range(1, ROUNDS + 1):
        data = json.loads((out / "rounds" / f"round-{r:05d}.json").read_text())
        counts = {}
        for c in data["log"]["candidates"]:
            if "cluster" not in c:
                continue
            now = counts.setdefault(c["cluster"], c["size_before"])
            assert c["size_at_decision"] == now
            assert c["keep"] == (now < data["log"]["threshold"])
            if c["keep"]:  # (one the answer check refuses later is taken back only after the round's decisions)
                counts[c["cluster"]] += 1
    # pool_gvendi: recomputed from the stored sketches (the pool run's shards + every round's kept sketches).
    shards = sorted((out / "pool_score" / "sketches").glob("shard-*.safetensors"))
    xs = [load_file(str(p))["sketches"] for p in shards]
    for r in range(1, ROUNDS + 1):
        xs.append(load_file(str(out / "rounds" / f"round-{r:05d}.safetensors"))["kept_sketches"])
        assert abs(rounds[r - 1]["pool_gvendi"] - pk.vendi_score(np.concatenate(xs), precision="exact")) < 1e-6 * \
            rounds[r - 1]["pool_gvendi"]


def test_kill_9_mid_run_then_resume(setup, full_run):
    tmp, model, pool = setup
    full_out, full_completed = full_run
    out = tmp / "run_killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with OpenAIServer(responder=responder, delay=0.15) as server:
        cmd = [sys.executable, "-m", "prism_kernels.synth.prismatic"] + _argv(server, out,
                                                                               score_run=full_out / "pool_score")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        manifest = out / "manifest.json"
        deadline = time.time() + 300
        try:
            while time.time() < deadline and proc.poll() is None:
                if manifest.exists() and json.loads(manifest.read_text())["rounds"]:
                    break
                time.sleep(0.02)
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            os.kill(proc.pid, signal.SIGKILL)  # right after round 1 landed, inside round 2
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        finished = json.loads(manifest.read_text())["rounds"]
        assert finished and len(finished) < ROUNDS
        before = server.completed
        server.delay = 0.0
        assert main(_argv(server, out, score_run=full_out / "pool_score")) == 0
        total = server.completed
    # No request was answered twice: the killed run and its resume together asked the server exactly as often
    # as the uninterrupted run did (the cache answered everything finished before the kill).
    assert total == full_completed and before < total
    rounds, synthetic = _read(out)
    full_rounds, full_synthetic = _read(full_out)
    assert synthetic == full_synthetic
    for a, b in zip(rounds, full_rounds):
        assert {k: v for k, v in a.items() if k != "pool_gvendi"} == {k: v for k, v in b.items() if k != "pool_gvendi"}
        assert abs(a["pool_gvendi"] - b["pool_gvendi"]) < 1e-6 * b["pool_gvendi"]
    assert not list((out / "rounds").glob(".*.tmp"))


def test_a_changed_setting_is_refused(setup, full_run):
    from prism_kernels.data import DataError
    from prism_kernels.synth.prismatic import PrismaticRun, add_prismatic_arguments
    import argparse

    full_out, _ = full_run
    with OpenAIServer(responder=responder) as server:
        argv = _argv(server, full_out, score_run=full_out / "pool_score")
        argv[argv.index("--answer-check") + 1] = "5"
        args = add_prismatic_arguments(argparse.ArgumentParser()).parse_args(argv)
        with pytest.raises(DataError, match="answer_check"):
            PrismaticRun(args).run()


def test_a_second_process_on_the_same_run_directory_is_refused(setup, full_run):
    from prism_kernels.data import DataError
    from prism_kernels.score.rundir import lock_directory
    from prism_kernels.synth.prismatic import PrismaticRun, add_prismatic_arguments
    import argparse

    full_out, _ = full_run
    with OpenAIServer(responder=responder) as server:
        args = add_prismatic_arguments(argparse.ArgumentParser()).parse_args(
            _argv(server, full_out, score_run=full_out / "pool_score"))
        held = lock_directory(full_out, "test")  # as another process would (flock is per open file)
        try:
            with pytest.raises(DataError, match="in use by another prism synth prismatic process"):
                PrismaticRun(args).run()
        finally:
            held.close()
        PrismaticRun(args).run()  # released: the finished run is found complete


def test_a_server_that_stays_down_is_named_then_the_run_resumes(setup, full_run, capsys):
    import socket

    full_out, _ = full_run
    out = setup[0] / "run_down"
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    class Down:
        url = f"http://127.0.0.1:{port}/v1"

    argv = _argv(Down, out, score_run=full_out / "pool_score")
    argv[argv.index("--rounds") + 1] = "1"
    assert main(argv + ["--max-retries", "1", "--timeout", "5"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (after the proxy's loading bars)
    assert last.startswith("prism: error: ") and f"127.0.0.1:{port}" in last
    assert not (out / "rounds.jsonl").exists()
    with OpenAIServer(responder=responder) as server:
        argv = _argv(server, out, score_run=full_out / "pool_score")
        argv[argv.index("--rounds") + 1] = "1"
        assert main(argv) == 0
    rounds, _ = _read(out)
    assert [r["round"] for r in rounds] == [1]
