"""NeMo Curator stages: gradient sketches for G-Vendi, and the Prismatic sparse-cluster filter.

    from nemo_curator.pipeline import Pipeline
    from nemo_curator.backends.ray_data import RayDataExecutor
    from nemo_curator.stages.text.io.reader import JsonlReader
    from nemo_curator.stages.text.io.writer import ParquetWriter
    from prism_kernels.integrations.nemo_curator import GradientSketchStage, gvendi_from_output

    pipe = Pipeline(name="sketch", stages=[JsonlReader("data/"), GradientSketchStage("./proxy", k=1024),
                                           ParquetWriter("out/")])
    pipe.run(RayDataExecutor())
    gvendi_from_output("out/")["gvendi"]["q1"]

Requires ``nemo-curator`` (the ``curator`` extra); this module imports it at the top, so import it only
where Curator is used (``import prism_kernels`` never does). docs/nemo_curator.md has the full guide.

Both stages are Curator actor stages (they override ``setup``): each Ray actor loads the proxy once in
``setup()`` and then processes whole ``DocumentBatch`` es, one output batch per input batch (a 1:1
mapping, which is what Curator's resumability (``Pipeline.run(checkpoint_path=...)``) needs to attribute
finished rows to their source partition; both are declared ``is_resumable = True``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from nemo_curator.stages.base import ProcessingStage
from nemo_curator.stages.resources import Resources
from nemo_curator.tasks import DocumentBatch

from ..score.scorer import _fieldmap  # the Scorer's own conversion of --fields specs
from .sketch_output import COLUMNS, gvendi_from_output

__all__ = ["GradientSketchStage", "PrismaticFilterStage", "gvendi_from_output", "pool_clustering"]


def _error(msg: str):
    from ..data import DataError

    return DataError(msg)


def _default_gpus(gpus: float | None) -> float:
    """``gpus`` if given; else 1 when a GPU is visible here or in the connected Ray cluster, else 0."""
    if gpus is not None:
        if gpus < 0:
            raise ValueError(f"gpus must be >= 0, got {gpus!r}")
        return float(gpus)
    try:
        import ray

        if ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0:
            return 1.0
    except Exception:  # noqa: BLE001 - no Ray: decide from this machine
        pass
    import torch

    return 1.0 if torch.cuda.is_available() else 0.0


def _source_of(task: DocumentBatch) -> str:
    files = (task._metadata or {}).get("source_files")
    if files:
        return "|".join(str(f) for f in files)
    return task.task_id or ""


def _records(task: DocumentBatch, fieldmap, stage_name: str):
    """The field map for ``task`` (detected when None) and its rows as dicts of the mapped fields only.
    DataError naming the missing field (and the task's source files) when the batch lacks one."""
    from ..data import DataError, detect_fields

    table = task.to_pyarrow()
    columns = table.column_names
    try:
        fm = fieldmap if fieldmap is not None else detect_fields(columns)
        fm.check_columns(columns)
    except DataError as exc:
        raise _error(f"{stage_name}: {exc} (task {task.task_id or '?'}, source {_source_of(task) or '?'})") from None
    present = [c for c in fm.fields() if c in columns]
    return fm, table, table.select(present).to_pylist()


class GradientSketchStage(ProcessingStage[DocumentBatch, DocumentBatch]):
    """Adds every row's gradient sketch under a proxy LM, and its per-sample columns, to each batch.

    Args:
        model: a local folder (or HF id in the local cache) of a causal LM, as ``prism score --model``.
        tokenizer, k, kind, seed, params, max_length, batch_tokens, dtype, trust_remote_code: as
            :class:`prism_kernels.score.Scorer` / ``prism score`` (same settings = comparable sketches).
        fields: a ``--fields`` spec ("prompt=question,response=answer"), a FieldMap, or None (detected from
            each batch's columns).
        shard_rows: the rows of a batch are sketched in groups of this many consecutive rows, each cut into
            length-sorted forward/backward batches of at most ``batch_tokens`` padded tokens — exactly as
            ``prism score --shard-rows`` batches its shards, so when Curator's reader hands whole files to
            the stage the sketches equal ``prism score``'s bit for bit. None: the whole batch is one group.
        device: "auto" (cuda when the worker sees a GPU), "cpu" or "cuda".
        prefix: prepended to every added column name (e.g. "prism_" if the data has a "loss" column).
        gpus: GPUs per worker; None = 1 when a GPU is visible on this machine or in the connected Ray
            cluster, else 0. cpus: CPUs per worker (Curator ``Resources``).
        name: the stage name.

    Output columns (docs: :mod:`prism_kernels.integrations.sketch_output`): ``sketch`` (fixed-size list of
    k float32; null for a row not in the score), ``loss``, ``n_tokens``, ``n_response_tokens``,
    ``truncated``, ``sketch_norm``, ``finite``, ``skipped_reason`` (the per-sample columns of
    ``samples.parquet``), ``sketch_meta`` (JSON of the sketch metadata), ``sketch_source`` and
    ``sketch_position`` (the row's input order, used by :func:`gvendi_from_output` to form the
    bootstrap shards as ``prism score`` does).

    A row whose mapped fields are null / not text, or whose response is empty, is kept with a null sketch and
    its ``skipped_reason`` (as ``prism score --on-bad-record skip``). A batch that lacks a mapped column
    fails the pipeline with a DataError naming the field and the task's source files.
    """

    name = "gradient_sketch"
    is_resumable = True  # one output batch per input batch, rows unchanged: source-attributable

    def __init__(self, model, *, tokenizer=None, k: int = 1024, kind: str = "rademacher", seed: int = 0, fields=None,
                 params: str = "all", max_length: int = 2048, batch_tokens: int = 16384, device: str = "auto",
                 dtype: str = "auto", trust_remote_code: bool = False, shard_rows: int | None = 1024, prefix: str = "",
                 gpus: float | None = None, cpus: float = 1.0, name: str = "gradient_sketch"):
        from ..score.config import KINDS

        if shard_rows is not None and (isinstance(shard_rows, bool) or not isinstance(shard_rows, int) or shard_rows < 1):
            raise ValueError(f"shard_rows must be None or an int >= 1, got {shard_rows!r}")
        self.shard_rows = shard_rows
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.model = os.fspath(model) if isinstance(model, os.PathLike) else model
        self.tokenizer = os.fspath(tokenizer) if isinstance(tokenizer, os.PathLike) else tokenizer
        self.fields = _fieldmap(fields)  # a bad spec fails here, on the driver
        self.k, self.kind, self.seed, self.params = k, kind, seed, params
        self.max_length, self.batch_tokens = max_length, batch_tokens
        self.device, self.dtype, self.trust_remote_code = device, dtype, trust_remote_code
        self.prefix = prefix
        self.name = name
        self.resources = Resources(cpus=cpus, gpus=_default_gpus(gpus))
        self._scorer = None

    # -- Curator hooks ------------------------------------------------------------------------------
    def inputs(self) -> tuple[list[str], list[str]]:
        # The mapped fields are checked in process() (the error then names the field); Curator's generic
        # validation would only say "failed validation".
        return ["data"], []

    def outputs(self) -> tuple[list[str], list[str]]:
        return ["data"], [self.prefix + c for c in COLUMNS]

    def setup(self, worker_metadata=None) -> None:
        """Loads the proxy once per worker (a :class:`prism_kernels.score.Scorer`)."""
        if self._scorer is None:
            from ..score import Scorer

            self._scorer = Scorer(self.model, self.tokenizer, k=self.k, kind=self.kind, seed=self.seed,
                                  fields=self.fields, params=self.params, max_length=self.max_length,
                                  device=self.device, dtype=self.dtype, batch_tokens=self.batch_tokens,
                                  trust_remote_code=self.trust_remote_code)

    def teardown(self) -> None:
        self._scorer = None

    def process_batch(self, tasks: list[DocumentBatch]) -> list[DocumentBatch]:
        # One output per input, in order (Curator derives task ids and resumability counters from that).
        return [self.process(t) for t in tasks]

    def process(self, task: DocumentBatch) -> DocumentBatch:
        """Sketches the rows of ``task`` [n rows] and returns a DocumentBatch with the added columns."""
        import numpy as np
        import pyarrow as pa

        from ..score.plan import NOT_FINITE

        self.setup()
        scorer = self._scorer
        fm, table, records = _records(task, self.fields or scorer.fieldmap, self.name)
        scorer.fieldmap = fm
        clash = [self.prefix + c for c in COLUMNS if self.prefix + c in table.column_names]
        if clash:
            raise _error(f"{self.name}: the batch already has a column {clash[0]!r} (task {task.task_id or '?'}); "
                         f"pass prefix=... to GradientSketchStage")
        n, k = len(records), self.k
        if n:
            step = self.shard_rows or n
            outs = [scorer.sketch_records(records[i:i + step]) for i in range(0, n, step)]
            sk = np.concatenate([o.sketches.numpy() for o in outs])
            fin = np.concatenate([o.finite.numpy() for o in outs])
            loss = np.concatenate([o.loss.numpy() for o in outs])
            reasons = [r for o in outs for r in o.skipped_reason]
            n_tok = [v for o in outs for v in o.n_tokens.tolist()]
            n_resp = [v for o in outs for v in o.n_response_tokens.tolist()]
            trunc = [v for o in outs for v in o.truncated.tolist()]
            meta = json.dumps(asdict(scorer.meta), sort_keys=True)
        else:
            sk, fin, loss = np.zeros((0, k), np.float32), np.zeros(0, bool), np.zeros(0, np.float32)
            reasons, n_tok, n_resp, trunc = [], [], [], []
            meta = None
        sketched = [r is None for r in reasons]  # a forward/backward ran for this row
        reasons = [NOT_FINITE if (r is None and not bool(f)) else r for r, f in zip(reasons, fin)]
        keep = [r is None for r in reasons]  # in the score
        norms = np.linalg.norm(sk.astype(np.float64), axis=1) if n else np.zeros(0)
        flat = pa.array(sk.reshape(-1), pa.float32())
        sketch = pa.FixedSizeListArray.from_arrays(flat, k, mask=pa.array([not x for x in keep], pa.bool_()))
        source = _source_of(task)
        cols = {
            "sketch": sketch,
            "loss": pa.array([float(loss[i]) if s else None for i, s in enumerate(sketched)], pa.float32()),
            "n_tokens": pa.array(n_tok, pa.int32()),
            "n_response_tokens": pa.array(n_resp, pa.int32()),
            "truncated": pa.array([bool(t) for t in trunc], pa.bool_()),
            "sketch_norm": pa.array([float(norms[i]) if s else None for i, s in enumerate(sketched)], pa.float32()),
            "finite": pa.array([bool(fin[i]) if s else None for i, s in enumerate(sketched)], pa.bool_()),
            "skipped_reason": pa.array(reasons, pa.string()),
            "sketch_meta": pa.array([meta] * n, pa.string()),
            "sketch_source": pa.array([source] * n, pa.string()),
            "sketch_position": pa.array(range(n), pa.int64()),
        }
        for c in COLUMNS:
            table = table.append_column(self.prefix + c, cols[c])
        return DocumentBatch(dataset_name=task.dataset_name, data=table, _metadata=task._metadata,
                             _stage_perf=task._stage_perf)


# ================================================================================ Prismatic filter


def _pool_sketches(run_dir: Path):
    """All scored sketches of a finished ``prism score`` run: ``(x [n, k] float32, row_id [n] int64, meta)``
    in row-id order (the shard files)."""
    import numpy as np
    from safetensors import safe_open

    from ..score import load_run
    from ..score.rundir import RunDir

    load_run(run_dir)  # DataError unless the run is finished
    run = RunDir(run_dir)
    with open(run.manifest_path, encoding="utf-8") as f:
        shards = sorted(int(s) for s in json.load(f)["shards"])
    xs, ids, meta = [], [], None
    for s in shards:
        with safe_open(str(run.shard_path(s)), framework="numpy") as f:
            xs.append(f.get_tensor("sketches"))
            ids.append(f.get_tensor("row_id"))
            meta = json.loads(f.metadata()["sketch_meta"])
    x = np.concatenate(xs) if xs else np.zeros((0, 0), np.float32)
    return x.astype(np.float32), np.concatenate(ids).astype(np.int64), meta


def pool_clustering(pool_run, *, ratio: float = 0.1, n_clusters: int | None = None, niter: int = 20, seed: int = 0,
                    init: str = "random"):
    """The spherical k-means of a finished ``prism score`` run's sketches, computed once and stored next to
    the run (``<pool_run>/clusters/kmeans-<hash>.safetensors``, written atomically; later calls with the
    same settings load it).

    Args:
        pool_run: the run directory. ratio / n_clusters / niter / seed / init: as
            :func:`prism_kernels.synth.cluster.spherical_kmeans` (k = ratio x n unless n_clusters).

    Returns: ``(path, clustering, sketch_meta)`` — ``clustering`` a
    :class:`prism_kernels.synth.cluster.Clustering` (centroids [c, k] float32, assignment [n] int64,
    sizes [c] int64).
    """
    import hashlib

    import numpy as np
    from safetensors.numpy import load_file, save_file

    from ..score import load_run
    from ..score.rundir import atomic_write
    from ..synth.cluster import Clustering, spherical_kmeans

    run_dir = Path(pool_run)
    summary = load_run(run_dir).summary
    settings = {"config_hash": summary.get("config_hash"), "ratio": ratio, "n_clusters": n_clusters,
                "niter": niter, "seed": seed, "init": init}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = run_dir / "clusters" / f"kmeans-{key}.safetensors"
    if path.exists():
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            stored = f.metadata()
        t = load_file(str(path))
        cl = Clustering(t["centroids"], t["assignment"], t["sizes"], seed, init, niter,
                        float(stored.get("objective", "nan")))
        return path, cl, json.loads(stored["sketch_meta"])
    x, row_id, meta = _pool_sketches(run_dir)
    if x.shape[0] == 0:
        raise _error(f"{run_dir}: the pool run has no scored rows to cluster")
    cl = spherical_kmeans(x, n_clusters, ratio=ratio, niter=niter, seed=seed, init=init)
    tensors = {"centroids": np.ascontiguousarray(cl.centroids, np.float32), "assignment": cl.assignment,
               "sizes": cl.sizes, "row_id": row_id}
    md = {"format": "prism_kernels.integrations.pool_kmeans/1", "settings": json.dumps(settings, sort_keys=True),
          "sketch_meta": json.dumps(meta, sort_keys=True), "objective": repr(cl.objective)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=md))
    return path, cl, meta


class PrismaticFilterStage(ProcessingStage[DocumentBatch, DocumentBatch]):
    """Keeps only the rows whose nearest pool cluster is sparse (Prismatic Synthesis's filter).

    The pool is a finished ``prism score`` run: its sketches are clustered once (:func:`pool_clustering`,
    stored next to the run) when the stage is built. Each worker sketches the candidate rows with the pool
    run's proxy and settings (or reads an existing ``sketch`` column written by
    :class:`GradientSketchStage` with the same settings), assigns each to its nearest centroid and keeps it
    when that cluster holds fewer rows than the median pool cluster; every kept row is counted into its
    cluster at once, so a cluster stops accepting when it reaches the median
    (:class:`prism_kernels.synth.cluster.SparseClusterFilter`).

    **Counting is per worker.** Every Ray actor starts from the pool's sizes and counts only the rows *it*
    accepted; workers do not see each other's acceptances. With one worker (``num_workers=1``, see
    ``with_``) and the batches in input order the result equals the synthesis filter run over the
    candidates in that order. With W workers a sparse cluster can take up to W times its room (median - size)
    before every worker has closed it, and which rows are kept depends on which batches reached which
    worker, and in what order. After a resume (Curator's ``checkpoint_path``) the re-run partitions start
    from the pool's sizes again (the acceptances of finished partitions are not replayed). For a strict
    global quota, run with one worker or re-filter the union afterwards.

    Args:
        pool_run: the finished ``prism score`` run directory of the pool.
        ratio, n_clusters, niter, seed, init: the k-means (10% of the pool, 20 iterations by default).
        fields: the candidates' field map (default: the pool run's).
        sketch_column: use this column's sketches when a batch has it (its ``sketch_meta`` must equal the
            pool's); otherwise the stage sketches the rows itself.
        keep_unscored: keep rows that cannot be sketched (skipped or not finite) instead of dropping them.
        prefix: prepended to the added column names ``cluster``, ``cluster_size``, ``cluster_similarity``.
        device, gpus, cpus, name: as :class:`GradientSketchStage`.

    Kept rows gain ``cluster`` (int64, nearest centroid), ``cluster_size`` (int64, the cluster's size when
    the row was judged, before it was counted) and ``cluster_similarity`` (float32 cosine to the centroid).
    """

    name = "prismatic_filter"
    is_resumable = True  # one output batch (maybe empty) per input batch: source-attributable

    def __init__(self, pool_run, *, ratio: float = 0.1, n_clusters: int | None = None, niter: int = 20, seed: int = 0,
                 init: str = "random", fields=None, sketch_column: str = "sketch", keep_unscored: bool = False,
                 prefix: str = "", device: str = "auto", gpus: float | None = None, cpus: float = 1.0,
                 name: str = "prismatic_filter"):
        from ..score import load_run
        from ..score.rundir import RunDir

        self.pool_run = str(Path(pool_run).absolute())
        load_run(self.pool_run)  # DataError unless a finished run
        self.config = RunDir(self.pool_run).read_config()  # config.json: ScoreConfig.from_json reads it
        self.fields = _fieldmap(fields) if fields is not None else _fieldmap(self.config["identity"].get("fields"))
        path, cl, meta = pool_clustering(self.pool_run, ratio=ratio, n_clusters=n_clusters, niter=niter, seed=seed,
                                         init=init)
        self.clusters_path = str(path)
        self.pool_meta = meta
        self.n_clusters = cl.k
        self.sketch_column, self.keep_unscored, self.prefix = sketch_column, keep_unscored, prefix
        self.device = device
        self.name = name
        self.resources = Resources(cpus=cpus, gpus=_default_gpus(gpus))
        self._scorer = None
        self._filter = None

    def inputs(self) -> tuple[list[str], list[str]]:
        return ["data"], []

    def outputs(self) -> tuple[list[str], list[str]]:
        return ["data"], [self.prefix + c for c in ("cluster", "cluster_size", "cluster_similarity")]

    def setup(self, worker_metadata=None) -> None:
        """Loads the stored clustering (the worker's own counts start at the pool sizes) and the proxy."""
        if self._filter is None:
            from safetensors.numpy import load_file

            from ..synth.cluster import SparseClusterFilter

            t = load_file(self.clusters_path)
            self._filter = SparseClusterFilter(t["centroids"], t["sizes"])
        if self._scorer is None:
            from ..score import Scorer
            from ..score.config import ScoreConfig

            c = ScoreConfig.from_json(self.config)
            self._scorer = Scorer(c.model, c.tokenizer, k=c.k, kind=c.kind, seed=c.seed, fields=self.fields,
                                  params=c.params, max_length=c.max_length, device=self.device,
                                  dtype=c.dtype if self.device != "cuda" else "auto", batch_tokens=c.batch_tokens,
                                  trust_remote_code=c.trust_remote_code)
            mine = json.loads(json.dumps(asdict(self._scorer.meta)))
            if mine != self.pool_meta:
                raise _error(f"{self.name}: the proxy now gives other sketch metadata than the pool run "
                             f"{self.pool_run} ({_diff(self.pool_meta, mine)})")

    def teardown(self) -> None:
        self._scorer = None
        self._filter = None

    @property
    def counts(self):
        """This worker's current cluster sizes ``[c]`` int64 (pool sizes plus the rows it accepted)."""
        return None if self._filter is None else self._filter.counts.copy()

    def process_batch(self, tasks: list[DocumentBatch]) -> list[DocumentBatch]:
        return [self.process(t) for t in tasks]

    def _candidate_sketches(self, task: DocumentBatch):
        """``(table, x [n, k] float32 with NaN rows where unscored, scored [n] bool)``."""
        import numpy as np

        table = task.to_pyarrow()
        col = self.sketch_column
        if col and col in table.column_names:
            from .sketch_output import _meta_diff, _sketch_rows

            meta_col = col[: -len("sketch")] + "sketch_meta" if col.endswith("sketch") else "sketch_meta"
            if meta_col in table.column_names:
                metas = {m for m in table.column(meta_col).to_pylist() if m is not None}
                for m in metas:
                    if json.loads(m) != self.pool_meta:
                        raise _error(f"{self.name}: column {col!r} holds sketches of other settings than the pool "
                                     f"run ({_meta_diff(json.dumps(self.pool_meta), m)}); task {task.task_id or '?'}")
            rows, xs = _sketch_rows(table, col, f"{self.name}: task {task.task_id or '?'}", self._filter.centroids.shape[1])
            x = np.full((table.num_rows, xs.shape[1]), np.nan, np.float32)
            x[rows] = xs
            scored = np.zeros(table.num_rows, bool)
            scored[rows] = True
            return table, x, scored
        fm, table, records = _records(task, self.fields or self._scorer.fieldmap, self.name)
        self._scorer.fieldmap = fm
        if not records:
            return table, np.zeros((0, self._filter.centroids.shape[1]), np.float32), np.zeros(0, bool)
        out = self._scorer.sketch_records(records)
        scored = np.array([r is None for r in out.skipped_reason]) & out.finite.numpy().astype(bool)
        return table, out.sketches.numpy(), scored

    def process(self, task: DocumentBatch) -> DocumentBatch:
        """Filters the rows of ``task`` in order; returns the kept rows (possibly none) with the cluster columns."""
        import numpy as np
        import pyarrow as pa

        self.setup()
        table, x, scored = self._candidate_sketches(task)
        n = table.num_rows
        keep = np.array([bool(self.keep_unscored) and not s for s in scored], dtype=bool)
        cluster = np.full(n, -1, np.int64)
        size = np.full(n, -1, np.int64)
        sim = np.full(n, np.nan, np.float32)
        idx = np.flatnonzero(scored)
        if idx.size:
            for i, d in zip(idx.tolist(), self._filter.decide(x[idx])):
                keep[i] = d.keep
                cluster[i], size[i], sim[i] = d.cluster, d.size_at_decision, d.similarity
        self._log_metrics({"candidates": float(n), "kept": float(keep.sum()), "unscored": float(n - idx.size)})
        kept_idx = pa.array(np.flatnonzero(keep))
        out = table.take(kept_idx)
        for name, values, typ in (("cluster", cluster, pa.int64()), ("cluster_size", size, pa.int64()),
                                  ("cluster_similarity", sim, pa.float32())):
            col = pa.array(values[keep], typ, mask=~scored[keep])
            out = out.append_column(self.prefix + name, col)
        return DocumentBatch(dataset_name=task.dataset_name, data=out, _metadata=task._metadata,
                             _stage_perf=task._stage_perf)


def _diff(a: dict, b: dict) -> str:
    keys = sorted(set(a) | set(b))
    return "; ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)) or "same"
