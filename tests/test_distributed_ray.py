"""`prism score --engine ray` on a local 2-CPU Ray instance started here (DESIGN.md §4: fractional actor
CPUs), against `--engine local` on the same inputs: the same shard files, samples.parquet and summary.json
(timings aside); a driver killed with SIGKILL after its first recorded shard, then resumed on Ray; user
mistakes raised inside an actor reach the driver as one line.

One Ray instance and one set of runs are shared by all tests (Ray start-up costs ~10 s here); every step
that can hang has a hard timeout (subprocess timeout= or SIGALRM).
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from prism_kernels import _backends

pytest.importorskip("transformers")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("ray.data")

from tiny_models import GSM8K_TRAIN, gsm8k_records, tiny_causal_lm, tiny_tokenizer  # noqa: E402

pytestmark = [pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason=f"GSM8K not found at {GSM8K_TRAIN}"),
              pytest.mark.skipif(_backends.compiled() is None, reason="prism_kernels._C not built")]

REPO = Path(__file__).resolve().parent.parent
N_ROWS, SHARD_ROWS = 48, 4
N_SHARDS = N_ROWS // SHARD_ROWS
TIMING_KEYS = {"seconds", "samples_per_s", "timing"}
RUN_TIMEOUT = 240  # seconds for one `prism score` (a few seconds when the machine is idle)


@contextlib.contextmanager
def deadline(seconds: int, what: str):
    """Hard timeout for in-process steps (SIGALRM raises in the main thread)."""
    def expired(signum, frame):
        raise TimeoutError(f"{what}: no result after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _score_args(out: str) -> list[str]:
    # relative data and model paths: the actors must resolve them as the driver does (its cwd)
    return ["score", "g.jsonl", "--model", "tiny-qwen2", "--out", out, "--k", "32", "--shard-rows", str(SHARD_ROWS),
            "--batch-tokens", "1024", "--max-length", "160", "--quiet"]


def _prism(args, cwd, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "prism_kernels", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def _recorded(run: Path) -> set[int]:
    manifest = run / "manifest.json"
    if not manifest.exists():
        return set()
    return {int(s) for s in json.loads(manifest.read_text())["shards"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A local run, and a Ray run killed after its first recorded shard then resumed, on one Ray instance
    (2 CPUs) that this fixture starts; the Ray drivers are `prism score` subprocesses connecting to it."""
    import ray

    from prism_kernels.cli import main

    tmp = tmp_path_factory.mktemp("ray")
    tok = tiny_tokenizer(tmp)
    tiny_causal_lm(tmp, tok)
    (tmp / "g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gsm8k_records(N_ROWS)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    info = {"tmp": tmp, "seconds": {}}

    cwd = os.getcwd()
    os.chdir(tmp)  # the same relative paths as the Ray runs, so the summaries' configs match
    try:
        t = time.perf_counter()
        with deadline(RUN_TIMEOUT, "prism score --engine local"):
            assert main(_score_args("local") + ["--engine", "local"]) == 0
        info["seconds"]["local"] = time.perf_counter() - t
    finally:
        os.chdir(cwd)

    auth_mode = os.environ.get("RAY_AUTH_MODE")
    with deadline(120, "ray.init"):
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        # a new local instance enables token authentication (RAY_AUTH_MODE=token, token in ~/.ray/auth_token);
        # drivers given an explicit address must be told so, as on a real cluster
        if os.environ.get("RAY_AUTH_MODE"):
            env["RAY_AUTH_MODE"] = os.environ["RAY_AUTH_MODE"]
        info["address"] = address
        run = tmp / "ray"
        ray_args = _score_args("ray") + ["--engine", "ray", "--workers", "2"]

        # a driver killed (SIGKILL) right after its first shard is recorded
        t = time.perf_counter()
        proc = _prism(ray_args + ["--address", address], tmp, env)
        try:
            end = time.time() + RUN_TIMEOUT
            while time.time() < end and proc.poll() is None and not _recorded(run):
                time.sleep(0.02)
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert _recorded(run), "no shard recorded in time"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        info["seconds"]["ray_killed"] = time.perf_counter() - t
        info["done_at_kill"] = _recorded(run)
        info["summary_at_kill"] = (run / "summary.json").exists()
        info["stamps"] = {s: (run / "sketches" / f"shard-{s:05d}.safetensors").stat().st_mtime_ns
                          for s in info["done_at_kill"]}

        # the same command again; this time the cluster comes from $RAY_ADDRESS (as `ray job submit` sets it)
        t = time.perf_counter()
        proc = _prism(ray_args, tmp, {**env, "RAY_ADDRESS": address})
        try:
            out, _ = proc.communicate(timeout=RUN_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
        info["seconds"]["ray_resume"] = time.perf_counter() - t
        info["resume_rc"], info["resume_out"] = proc.returncode, out.decode(errors="replace")
        print("seconds:", {k: round(v, 1) for k, v in info["seconds"].items()})  # shown with -s
        yield info
    finally:
        ray.shutdown()
        if auth_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth_mode


def _safetensors(path):
    """(metadata dict, {name: tensor}) of a safetensors file (its bytes depend on the metadata's hash order)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def test_ray_run_equals_local_run(runs):
    tmp = runs["tmp"]
    assert runs["resume_rc"] == 0, runs["resume_out"][-3000:]
    local, ray_run = tmp / "local", tmp / "ray"
    s_local = json.loads((local / "summary.json").read_text())
    s_ray = json.loads((ray_run / "summary.json").read_text())
    assert s_ray["shards"] == N_SHARDS and s_ray["rows"] == N_ROWS
    assert {k: v for k, v in s_ray.items() if k not in TIMING_KEYS} == \
           {k: v for k, v in s_local.items() if k not in TIMING_KEYS}
    for q, v in s_local["gvendi"].items():  # the bar, implied by the equality above
        assert s_ray["gvendi"][q] == pytest.approx(v, rel=1e-9)
    t_local, t_ray = pq.read_table(local / "samples.parquet"), pq.read_table(ray_run / "samples.parquet")
    assert t_ray.column("row_id").to_pylist() == list(range(N_ROWS))
    assert t_ray.equals(t_local)
    # per-shard files written by the actors: the local engine's tensors, metadata and rows
    for s in range(N_SHARDS):
        a, b = _safetensors(ray_run / "sketches" / f"shard-{s:05d}.safetensors"), \
            _safetensors(local / "sketches" / f"shard-{s:05d}.safetensors")
        assert a[0] == b[0] and a[1].keys() == b[1].keys(), s
        assert all(torch.equal(a[1][k], b[1][k]) for k in a[1]), s
        name = f"shard-{s:05d}.rows.parquet"
        assert pq.read_table(ray_run / "sketches" / name).equals(pq.read_table(local / "sketches" / name)), name
    a, b = _safetensors(ray_run / "state.safetensors"), _safetensors(local / "state.safetensors")
    assert a[0] == b[0] and a[1].keys() == b[1].keys() and all(torch.equal(a[1][k], b[1][k]) for k in a[1])


def test_killed_ray_driver_resumes_without_recomputing(runs):
    run = runs["tmp"] / "ray"
    assert 1 <= len(runs["done_at_kill"]) < N_SHARDS and not runs["summary_at_kill"]
    assert runs["resume_rc"] == 0, runs["resume_out"][-3000:]
    assert _recorded(run) == set(range(N_SHARDS))
    for s, stamp in runs["stamps"].items():  # recorded shards were not run again
        assert (run / "sketches" / f"shard-{s:05d}.safetensors").stat().st_mtime_ns == stamp, s
    manifest = json.loads((run / "manifest.json").read_text())["shards"]
    starts = sorted((e["start"], e["stop"]) for e in manifest.values())
    assert starts == [(i * SHARD_ROWS, (i + 1) * SHARD_ROWS) for i in range(N_SHARDS)]  # no row lost or twice


def _broken_run(runs, name: str, data_path: str) -> Path:
    """A copy of the planned local run whose config points at other data (as if the data changed after
    planning, which score_dataset would refuse but a worker must still report clearly)."""
    src, dst = runs["tmp"] / "local", runs["tmp"] / name
    dst.mkdir()
    shutil.copy(src / "plan.parquet", dst / "plan.parquet")
    cfg = json.loads((src / "config.json").read_text())
    cfg["identity"]["data"]["paths"] = [data_path]
    cfg["identity"]["model"]["name"] = str(runs["tmp"] / "tiny-qwen2")
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_user_mistake_in_an_actor_is_one_line(runs):
    from prism_kernels.data import DataError
    from prism_kernels.distributed import ray_engine

    records = gsm8k_records(N_ROWS)
    records[1]["answer"] = ""  # row 1 was planned as a sample; now it has nothing to score
    changed = runs["tmp"] / "changed.jsonl"
    changed.write_text("".join(json.dumps(r) + "\n" for r in records))
    done = []
    with deadline(RUN_TIMEOUT, "ray_engine.run on changed data"), pytest.raises(DataError) as err:
        ray_engine.run(_broken_run(runs, "broken-rows", str(changed)), [0], workers=1, device="cpu",
                       on_done=done.append)
    msg = str(err.value)
    assert "\n" not in msg and "the data changed since the plan" in msg and "row 1" in msg, msg
    assert not done

    # an actor that cannot even open the data reports it with each shard instead of dying in its
    # constructor (which Ray Data would retry, then report as ActorDiedError text); the class is plain
    # Python, so this part runs without Ray
    worker = ray_engine.ShardWorker(str(_broken_run(runs, "broken-open", str(runs["tmp"] / "nowhere.jsonl"))),
                                    device="cpu")  # threads, cwd: this process's, unchanged
    out = worker({"shard": np.array([0, 1], dtype=np.int64)})
    assert out["shard"].tolist() == [0, 1] and out["result"].tolist() == ["", ""]
    assert all("nowhere.jsonl" in e and "\n" not in e for e in out["error"]), out["error"]


def test_actor_resources_leave_room_on_two_cores():
    from prism_kernels.data import DataError
    from prism_kernels.distributed.ray_engine import plan_resources

    # DESIGN §4: 2 CPUs and 2 actors of 1 CPU each hang; the pool must leave a share free
    r = plan_resources({"CPU": 2.0}, [2.0], workers=2, n_shards=12, gpus_per_worker=None, device="cpu")
    assert r["actors"] == 2 and 0 < r["num_cpus"] < 1 and r["actors"] * r["num_cpus"] < 2
    assert r["threads"] == 1 and r["num_gpus"] == 0 and r["device"] == "cpu"
    # above one CPU Ray takes whole numbers only; threads = the actor's share of the cores
    r = plan_resources({"CPU": 16.0}, [16.0], workers=2, n_shards=12, gpus_per_worker=None, device="cpu")
    assert r["num_cpus"] == 5.0 and r["threads"] == 8
    # never more actors (proxies loaded) than shards
    assert plan_resources({"CPU": 16.0}, [16.0], workers=8, n_shards=3, gpus_per_worker=None,
                          device="cpu")["actors"] == 3
    # GPUs: one per actor by default when the cluster has them, none when the run asked for the CPU
    r = plan_resources({"CPU": 32.0, "GPU": 4.0}, [16.0, 16.0], workers=4, n_shards=12, gpus_per_worker=None,
                       device="cuda")
    assert r["num_gpus"] == 1.0 and r["device"] == "cuda" and r["threads"] == 8
    assert plan_resources({"CPU": 32.0, "GPU": 4.0}, [32.0], workers=4, n_shards=12, gpus_per_worker=None,
                          device="cpu")["num_gpus"] == 0
    assert plan_resources({"CPU": 8.0, "GPU": 1.0}, [8.0], workers=2, n_shards=12, gpus_per_worker=0.5,
                          device="cuda")["num_gpus"] == 0.5
    with pytest.raises(DataError, match="--gpus-per-worker 1: the Ray cluster has 0 GPUs"):
        plan_resources({"CPU": 8.0}, [8.0], workers=2, n_shards=12, gpus_per_worker=1, device="cpu")
    with pytest.raises(DataError, match="the run's device is cuda .* no GPU is reserved"):
        plan_resources({"CPU": 8.0}, [8.0], workers=2, n_shards=12, gpus_per_worker=None, device="cuda")


def test_cluster_commands_in_docs_parse():
    from prism_kernels.cli import build_parser

    text = (REPO / "docs" / "ray.md").read_text()
    cmds = [line.strip() for line in text.splitlines() if line.strip().startswith("prism score ")]
    assert any("--address auto" in c and "--gpus-per-worker 1" in c for c in cmds), cmds
    assert "ray start --head" in text
    parser = build_parser()
    for cmd in cmds:
        argv = re.sub(r"\s+#.*$", "", cmd).split()[1:]
        args = parser.parse_args(argv)
        assert args.engine == "ray", cmd
