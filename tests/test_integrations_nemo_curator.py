"""NeMo Curator integration: real Curator pipelines on RayDataExecutor (JSONL reader -> GradientSketchStage ->
Parquet/JSONL writer; reader -> PrismaticFilterStage -> writer) with a tiny local Qwen2 on GSM8K rows, checked
against `prism score` and the synthesis filter (faiss k-means + SparseClusterFilter) on the same inputs.

The pipelines run in one subprocess (Ray and Curator start once, ~30-60 s on 2 cores) killed after
PIPELINE_TIMEOUT seconds, so a Ray hang fails the tests instead of blocking them.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

pytest.importorskip("nemo_curator", reason="nemo-curator is not installed (the 'curator' extra: "
                                            "pip install 'nemo-curator==1.4.0')")
pytest.importorskip("faiss")
pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from prism_kernels import _backends  # noqa: E402
from tiny_models import GSM8K_TEST, GSM8K_TRAIN, gsm8k_records, tiny_causal_lm, tiny_tokenizer  # noqa: E402

pytestmark = [pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason=f"GSM8K not found at {GSM8K_TRAIN}"),
              pytest.mark.skipif(_backends.compiled() is None, reason="prism_kernels._C not built")]

REPO = Path(__file__).resolve().parent.parent
PIPELINE_TIMEOUT = 540
K = 32
SHARD_ROWS = 5
N_POOL = 40
N_CAND = 30

# The pipelines; run as `python -c RUNNER jobs.json results.json` with the repository on PYTHONPATH.
RUNNER = textwrap.dedent("""
    import json, os, signal, socket, subprocess, sys, time, traceback
    import ray
    from nemo_curator.backends.ray_data import RayDataExecutor
    from nemo_curator.pipeline import Pipeline
    from nemo_curator.stages.text.io.reader import JsonlReader
    from nemo_curator.stages.text.io.writer import JsonlWriter, ParquetWriter
    from prism_kernels.integrations.nemo_curator import GradientSketchStage, PrismaticFilterStage

    jobs = json.load(open(sys.argv[1]))
    results = {}
    # One Ray cluster for every job (Curator's resumability needs one started before pipeline.run), with 4
    # logical CPUs: on 2 cores, actors holding both CPUs starve the read tasks (DESIGN.md 4).
    # (`ray start --head --block` as Curator's RayClient does, without its dashboard and `ray status` polling)
    temp = sys.argv[3]
    def free_port():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    port = free_port()
    # ray 2.60 turns token authentication on for `ray start` when ~/.ray/auth_token exists, but a driver
    # connecting by address does not send it ("Missing authorization header"): off for this loopback cluster
    os.environ["RAY_AUTH_MODE"] = "disabled"
    t0 = time.perf_counter()
    head = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--block",
                             "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "4",
                             "--ray-client-server-port", str(free_port()),
                             "--dashboard-agent-listen-port", str(free_port()),
                             "--metrics-export-port", str(free_port()),
                             "--include-dashboard", "false", "--disable-usage-stats",
                             "--temp-dir", temp], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    for _ in range(300):
        try:
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
            ray.shutdown()
            break
        except Exception:
            time.sleep(1)
    results["_ray_start_s"] = time.perf_counter() - t0
    try:
        for job in jobs:
            t0 = time.perf_counter()
            try:
                stages = [JsonlReader(job["input"], files_per_partition=1)]
                if job["stage"] == "sketch":
                    stages.append(GradientSketchStage(job["model"], k=job["k"], fields=job.get("fields"),
                                                      shard_rows=job["shard_rows"], cpus=1.0))
                else:
                    stages.append(PrismaticFilterStage(job["pool_run"], seed=0).with_(num_workers=1))
                if job["writer"] == "parquet":
                    stages.append(ParquetWriter(job["out"]))
                else:
                    stages.append(JsonlWriter(job["out"], write_kwargs={"double_precision": 15}))
                tasks = Pipeline(name=job["name"], stages=stages).run(
                    RayDataExecutor(), checkpoint_path=job.get("checkpoint"))
                results[job["name"]] = {"ok": True, "files": [f for t in tasks for f in t.data]}
            except BaseException as exc:
                results[job["name"]] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                        "traceback": traceback.format_exc()[-3000:]}
            results[job["name"]]["seconds"] = time.perf_counter() - t0
            json.dump(results, open(sys.argv[2], "w"))
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        # Ray processes of this cluster outside `ray start`'s group: found by the private temp dir in their
        # command line, ended by pid.
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != os.getpid():
                try:
                    cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
                except OSError:
                    continue
                if temp in cmd:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except OSError:
                        pass
        json.dump(results, open(sys.argv[2], "w"))
""")


def _write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _kill_ray_of(temp: str) -> None:
    """Ends, by pid, the processes of the Ray cluster whose private temp dir is ``temp``."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if temp in cmd:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass


def _run_pipelines(jobs, root: Path) -> dict:
    import tempfile

    jobs_path, results_path = root / "jobs.json", root / "results.json"
    jobs_path.write_text(json.dumps(jobs))
    temp = tempfile.mkdtemp(prefix="prc-", dir="/tmp")  # short: Ray's socket paths live under it
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               RAY_DEDUP_LOGS="0", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    # RayClient runs the `ray` command of this interpreter's environment
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(jobs_path), str(results_path), temp], cwd=root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=PIPELINE_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and the Ray processes it started
        _kill_ray_of(temp)
        out, _ = proc.communicate()
        pytest.fail(f"the Curator pipelines did not finish in {PIPELINE_TIMEOUT} s:\n{out.decode()[-4000:]}")
    if not results_path.exists():
        pytest.fail(f"the pipeline runner failed (rc {proc.returncode}):\n{out.decode()[-4000:]}")
    results = json.loads(results_path.read_text())
    results["_log"] = out.decode()[-4000:]
    return results


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from prism_kernels.score import score_dataset

    root = tmp_path_factory.mktemp("curator")
    tok = tiny_tokenizer(root)
    model = str(tiny_causal_lm(root, tok))
    pool = gsm8k_records(N_POOL)
    pool[7] = {"question": pool[7]["question"], "answer": ""}  # empty response: skipped by both
    half = N_POOL // 2
    pool_a = _write_jsonl(root / "pool" / "a.jsonl", pool[:half])
    pool_b = _write_jsonl(root / "pool" / "b.jsonl", pool[half:])
    cand = gsm8k_records(N_CAND, path=GSM8K_TEST)
    cand_jsonl = _write_jsonl(root / "cand" / "cand.jsonl", cand)
    bad_jsonl = _write_jsonl(root / "bad" / "bad.jsonl", [{"question": r["question"], "solution": r["answer"]}
                                                          for r in cand[:4]])
    t0 = time.perf_counter()
    run = score_dataset([pool_a, pool_b], root / "pool-run", model=model, k=K, shard_rows=SHARD_ROWS,
                        progress=False)
    score_s = time.perf_counter() - t0
    sketch = {"stage": "sketch", "model": model, "k": K, "shard_rows": SHARD_ROWS}
    jobs = [
        # resumability: the first run sees a.jsonl only; the second, over the folder, must skip it
        dict(sketch, name="resume_a", input=[str(pool_a)], writer="parquet", out=str(root / "out-parquet"),
             checkpoint=str(root / "ckpt")),
        dict(sketch, name="resume_ab", input=str(root / "pool"), writer="parquet", out=str(root / "out-parquet"),
             checkpoint=str(root / "ckpt")),
        dict(sketch, name="sketch_jsonl", input=str(root / "pool"), shard_rows=None, writer="jsonl",
             out=str(root / "out-jsonl")),
        dict(sketch, name="missing_field", input=str(bad_jsonl), fields="prompt=question,response=answer",
             writer="parquet", out=str(root / "out-bad")),
        {"name": "filter", "stage": "filter", "input": str(cand_jsonl), "pool_run": str(run.run_dir),
         "writer": "parquet", "out": str(root / "out-filter")},
    ]
    t0 = time.perf_counter()
    results = _run_pipelines(jobs, root)
    print(f"prism score: {score_s:.1f} s; Curator pipelines: {time.perf_counter() - t0:.1f} s "
          f"(Ray start {results.get('_ray_start_s', 0):.1f} s; "
          f"{ {k: round(v['seconds'], 1) for k, v in results.items() if not k.startswith('_')} })")
    return {"root": root, "model": model, "run": run, "results": results, "pool": pool, "cand": cand}


def _ok(env, name):
    res = env["results"][name]
    assert res["ok"], f"{name} failed: {res.get('traceback')}\n{env['results']['_log']}"
    return res


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


# ------------------------------------------------------------------------------------ sketch stage


def _sketched_table(env) -> "pa.Table":
    """The Parquet output of the two resumed runs, rows in input order (a.jsonl then b.jsonl)."""
    files = sorted((env["root"] / "out-parquet").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    order = sorted(range(table.num_rows), key=lambda i: (table.column("sketch_source")[i].as_py(),
                                                         table.column("sketch_position")[i].as_py()))
    return table.take(pa.array(order))


def test_sketch_pipeline_parquet_resumed_equals_prism_score(env):
    from prism_kernels.integrations.nemo_curator import gvendi_from_output

    first, second = _ok(env, "resume_a"), _ok(env, "resume_ab")
    # Curator's checkpoint: the second run over the folder skipped a.jsonl (finished by the first run)
    assert len(first["files"]) == 1 and len(second["files"]) == 1 and first["files"] != second["files"]
    assert len(list((env["root"] / "out-parquet").glob("*.parquet"))) == 2
    table = _sketched_table(env)
    assert table.num_rows == N_POOL
    assert table.column("sketch_source").to_pylist()[-1].endswith("b.jsonl")
    assert pa.types.is_fixed_size_list(table.schema.field("sketch").type)
    assert table.schema.field("sketch").type.list_size == K
    assert table.schema.field("sketch").type.value_type == pa.float32()
    # the user's columns are kept
    assert table.column("question").to_pylist() == [r["question"] for r in env["pool"]]

    got = gvendi_from_output(env["root"] / "out-parquet", shard_rows=SHARD_ROWS)
    want = env["run"].summary
    assert (got["n"], got["rows"], got["skipped"]) == (want["n"], want["rows"], want["skipped"])
    assert got["skipped"] == {"empty_response": 1}
    for q in ("q1", "q2", "inf"):
        assert _rel(got["gvendi"][q], want["gvendi"][q]) < 1e-6, (q, got["gvendi"][q], want["gvendi"][q])
    assert want["ci95"]["q1"] is not None  # 8 shards of 5 rows: the interval exists
    for a, b in zip(got["ci95"]["q1"], want["ci95"]["q1"]):
        assert _rel(a, b) < 1e-6
    assert got["sketch_meta"] == want["sketch_meta"]
    print("parquet (resumed) vs prism score rel. diff:",
          {q: _rel(got["gvendi"][q], want["gvendi"][q]) for q in got["gvendi"]},
          "ci:", [_rel(a, b) for a, b in zip(got["ci95"]["q1"], want["ci95"]["q1"])])

    # per-sample columns equal samples.parquet's, row by row
    samples = pq.read_table(env["run"].run_dir / "samples.parquet")
    for col in ("n_tokens", "n_response_tokens", "truncated", "skipped_reason", "finite"):
        assert table.column(col).to_pylist() == samples.column(col).to_pylist(), col
    np.testing.assert_allclose(np.array(table.column("loss").to_pylist(), dtype=float),
                               np.array(samples.column("loss").to_pylist(), dtype=float), rtol=1e-5)


def test_sketch_pipeline_jsonl_other_batches_within_tolerance(env):
    """JSONL output, the whole task as one group (other forward/backward batches than prism score's)."""
    from prism_kernels.integrations.nemo_curator import gvendi_from_output

    res = _ok(env, "sketch_jsonl")
    assert res["files"][0].endswith(".jsonl")
    got = gvendi_from_output(res["files"], shard_rows=SHARD_ROWS)  # a list of the written files
    want = env["run"].summary
    assert (got["n"], got["rows"], got["skipped"]) == (want["n"], want["rows"], want["skipped"])
    diffs = {q: _rel(got["gvendi"][q], want["gvendi"][q]) for q in ("q1", "q2", "inf")}
    print("jsonl (other batches) vs prism score rel. diff:", diffs)
    assert max(diffs.values()) < 1e-6
    assert got["ci95"]["q1"] == pytest.approx(want["ci95"]["q1"], rel=1e-6)


def test_missing_field_fails_the_pipeline_naming_it(env):
    res = env["results"]["missing_field"]
    assert not res["ok"]
    assert "'answer'" in res["error"] and "not in the data" in res["error"], res["error"]
    assert "bad.jsonl" in res["error"]  # the task's source file


def test_stage_without_ray_matches_the_scorer(env, tmp_path):
    """process() on an in-memory DocumentBatch: the same sketches as Scorer.sketch_records on each shard group."""
    import torch
    from nemo_curator.tasks import DocumentBatch

    from prism_kernels.integrations.nemo_curator import GradientSketchStage
    from prism_kernels.score import Scorer

    rows = env["pool"][:12]
    stage = GradientSketchStage(env["model"], k=K, shard_rows=SHARD_ROWS, prefix="p_", gpus=None)
    assert stage.resources.gpus == (1.0 if torch.cuda.is_available() else 0.0)
    assert stage.is_resumable
    out = stage.process_batch([DocumentBatch(dataset_name="d", data=pa.Table.from_pylist(rows),
                                             _metadata={"source_files": ["x.jsonl"]})])
    assert len(out) == 1
    table = out[0].to_pyarrow()
    assert table.column_names[:2] == ["question", "answer"] and "p_sketch" in table.column_names
    scorer = Scorer(env["model"], k=K)
    want = np.concatenate([scorer.sketch_records(rows[i:i + SHARD_ROWS]).sketches.numpy()
                           for i in range(0, 12, SHARD_ROWS)])
    got = table.column("p_sketch").to_pylist()
    assert got[7] is None and table.column("p_skipped_reason")[7].as_py() == "empty_response"
    np.testing.assert_array_equal(np.array([g for g in got if g is not None], np.float32),
                                  np.delete(want, 7, axis=0))
    assert table.column("p_sketch_position").to_pylist() == list(range(12))
    assert set(table.column("p_sketch_source").to_pylist()) == {"x.jsonl"}


# ------------------------------------------------------------------------------------ gvendi_from_output


def test_gvendi_from_output_refuses_wrong_width_and_mixed_metadata(env, tmp_path):
    from prism_kernels.data import DataError
    from prism_kernels.integrations.nemo_curator import gvendi_from_output

    table = _sketched_table(env)
    # wrong width: a list of K - 1 values with the metadata still saying K
    i = table.column_names.index("sketch")
    short = pa.array([None if v is None else v[:-1] for v in table.column("sketch").to_pylist()],
                     pa.list_(pa.float32(), K - 1))
    pq.write_table(table.set_column(i, "sketch", short), tmp_path / "short.parquet")
    with pytest.raises(DataError, match=rf"width {K - 1}, expected k = {K}"):
        gvendi_from_output(tmp_path / "short.parquet")
    # mixed metadata: the second half claims another seed
    metas = table.column("sketch_meta").to_pylist()
    other = json.dumps(dict(json.loads(metas[0]), seed=1), sort_keys=True)
    j = table.column_names.index("sketch_meta")
    mixed = table.set_column(j, "sketch_meta", pa.array(metas[:20] + [other] * 20))
    pq.write_table(mixed, tmp_path / "mixed.parquet")
    with pytest.raises(DataError, match=r"row 20 has other sketch metadata .*seed: 0 vs 1"):
        gvendi_from_output(tmp_path / "mixed.parquet")
    # the same rows from two files with different metadata are refused too
    (tmp_path / "two").mkdir()
    pq.write_table(table.slice(0, 20), tmp_path / "two" / "a.parquet")
    pq.write_table(mixed.slice(20), tmp_path / "two" / "b.parquet")
    with pytest.raises(DataError, match="other sketch metadata"):
        gvendi_from_output(tmp_path / "two")
    with pytest.raises(DataError, match="no column 'sketch'"):
        gvendi_from_output(pa.table({"question": ["a"]}))


def test_gvendi_from_output_row_order_does_not_matter(env):
    """Rows shuffled (as several Curator writers' files are read in hash order): the same summary, since the
    shards follow (sketch_source, sketch_position)."""
    from prism_kernels.integrations.nemo_curator import gvendi_from_output

    table = _sketched_table(env)
    perm = np.random.default_rng(0).permutation(table.num_rows)
    a = gvendi_from_output(table, shard_rows=SHARD_ROWS)
    b = gvendi_from_output(table.take(pa.array(perm)), shard_rows=SHARD_ROWS)
    assert a["ci95"] == b["ci95"] or a["ci95"]["q1"] == pytest.approx(b["ci95"]["q1"], rel=1e-12)
    for q in ("q1", "q2", "inf"):
        assert a["gvendi"][q] == pytest.approx(b["gvendi"][q], rel=1e-12)


# ------------------------------------------------------------------------------------ Prismatic filter


def test_filter_pipeline_reproduces_the_synthesis_filter(env):
    from safetensors.numpy import load_file

    from prism_kernels.integrations.nemo_curator import _pool_sketches
    from prism_kernels.score import Scorer
    from prism_kernels.synth.cluster import SparseClusterFilter, spherical_kmeans

    res = _ok(env, "filter")
    run_dir = env["run"].run_dir
    stored = sorted((run_dir / "clusters").glob("kmeans-*.safetensors"))
    assert len(stored) == 1  # computed once, next to the run
    # the oracle: the synthesis filter on the same pool sketches and candidates, in input order
    x_pool, _, _ = _pool_sketches(run_dir)
    assert x_pool.shape == (N_POOL - 1, K)
    cl = spherical_kmeans(x_pool, ratio=0.1, niter=20, seed=0)  # the synthesis loop's defaults
    np.testing.assert_array_equal(load_file(str(stored[0]))["sizes"], cl.sizes)
    filt = SparseClusterFilter.from_clustering(cl)
    scorer = Scorer(env["model"], k=K)
    cand_x = scorer.sketch_records(env["cand"]).sketches.numpy()
    decisions = filt.decide(cand_x)
    want_keep = [i for i, d in enumerate(decisions) if d.keep]
    assert 0 < len(want_keep) < N_CAND  # the filter does something here

    files = res["files"]
    table = pa.concat_tables([pq.read_table(f) for f in files]) if files else None
    got_q = table.column("question").to_pylist()
    assert got_q == [env["cand"][i]["question"] for i in want_keep]
    assert table.column("cluster").to_pylist() == [decisions[i].cluster for i in want_keep]
    assert table.column("cluster_size").to_pylist() == [decisions[i].size_at_decision for i in want_keep]
    assert all(s < filt.threshold for s in table.column("cluster_size").to_pylist())
    print(f"filter: kept {len(want_keep)} of {N_CAND}; {cl.k} clusters, median {filt.threshold}")


def test_filter_stage_uses_an_existing_sketch_column(env):
    """GradientSketchStage -> PrismaticFilterStage (no Ray): the filter reads the sketch column and decides as
    when it sketches the rows itself; sketches of other settings are refused."""
    from nemo_curator.tasks import DocumentBatch

    from prism_kernels.data import DataError
    from prism_kernels.integrations.nemo_curator import GradientSketchStage, PrismaticFilterStage

    rows = env["cand"][:12]
    batch = DocumentBatch(dataset_name="c", data=pa.Table.from_pylist(rows), _metadata={"source_files": ["c"]})
    sketched = GradientSketchStage(env["model"], k=K, shard_rows=None, gpus=0).process(batch)
    own, given = PrismaticFilterStage(env["run"].run_dir), PrismaticFilterStage(env["run"].run_dir)
    a = own.process(batch).to_pyarrow()
    b = given.process(sketched).to_pyarrow()
    assert a.column("question").to_pylist() == b.column("question").to_pylist()
    assert a.column("cluster").to_pylist() == b.column("cluster").to_pylist()
    assert "sketch" in b.column_names and "sketch" not in a.column_names
    # each worker's counts: the pool's sizes plus what it accepted
    np.testing.assert_array_equal(own.counts - np.bincount(a.column("cluster").to_numpy(),
                                                           minlength=own.n_clusters), given._filter.before)
    other = GradientSketchStage(env["model"], k=K, seed=1, gpus=0).process(batch)
    with pytest.raises(DataError, match=r"other settings than the pool run .*seed"):
        PrismaticFilterStage(env["run"].run_dir).process(other)
