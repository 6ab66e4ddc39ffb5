"""Pass 2: sketching the planned shards, and the local engine.

``run_shard(context, shard_id)`` is the whole per-shard job (read the shard's rows, render, batch as
planned, sketch, write the shard's files atomically); the Ray engine calls it from a Ray Data actor that
holds one :class:`ShardContext` (``ShardContext.from_run_dir(run_dir)``), and the driver records each
returned :class:`ShardResult` in the manifest (``RunDir.record_shard``). The local engine runs the same
three steps (:func:`prepare_shard`, :func:`compute_shard`, :func:`write_shard`) as a pipeline: a reader
thread prepares the next shards (reading, rendering, padding) and a writer thread writes finished ones
while the main thread runs the forward/backward passes.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import asdict, dataclass, field

import torch

from .plan import NOT_FINITE, prepare_rows, read_shard_plan
from .rundir import RunDir, atomic_write


def _error(msg: str):
    from ..data import DataError

    return DataError(msg)


@dataclass
class ShardContext:
    """Everything a worker needs to run shards: the run directory, its config, the opened dataset, the
    field map and a loaded :class:`~prism_kernels.score.Scorer` (the proxy)."""

    run: RunDir
    config: object  # ScoreConfig
    config_hash: str
    dataset: object  # prism_kernels.data.Dataset
    fieldmap: object  # prism_kernels.data.FieldMap
    scorer: object  # Scorer

    @classmethod
    def from_run_dir(cls, run_dir, device: str | None = None, dataset=None) -> "ShardContext":
        """Builds a context from a planned run directory (config.json + plan.parquet): opens the data (or uses
        ``dataset``, an already opened one, e.g. with its seek index built) and loads the proxy (on ``device``,
        default the config's). Used by the Ray engine's actors."""
        from ..data import FieldMap, open_dataset
        from .config import ScoreConfig
        from .scorer import Scorer

        run = RunDir(run_dir)
        stored = run.read_config()
        if stored is None or not run.plan_path.exists():
            raise _error(f"{run_dir}: not a planned run directory (no config.json / plan.parquet)")
        cfg = ScoreConfig.from_json(stored)
        if device is not None:
            cfg.device = device
        if dataset is None:
            dataset = open_dataset(cfg.data, split=cfg.split)
        fieldmap = FieldMap.from_json(cfg.fields)
        scorer = Scorer(cfg.model, cfg.tokenizer, k=cfg.k, kind=cfg.kind, seed=cfg.seed, fields=fieldmap,
                        params=cfg.params, max_length=cfg.max_length, device=cfg.device, dtype=cfg.dtype,
                        batch_tokens=cfg.batch_tokens, trust_remote_code=cfg.trust_remote_code)
        return cls(run, cfg, stored["config_hash"], dataset, fieldmap, scorer)


@dataclass
class ShardResult:
    """What a finished shard reports (stored in manifest.json under its id)."""

    shard: int
    start: int  # first row id
    stop: int  # one past the last row id
    rows: int  # rows in the range (skipped ones included)
    sketched: int  # rows in the score (finite sketch and loss)
    skipped: dict = field(default_factory=dict)  # reason -> count
    seconds: float = 0.0  # forward/backward time
    sketch_file: str = ""
    rows_file: str = ""

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class PreparedShard:
    """A shard ready for the forward/backward passes: its plan rows and padded batches."""

    shard: int
    rows: list  # [n] plan.Row in row-id order
    batches: list  # [(positions into rows, (ids, mask, resp))]
    seconds: float = 0.0


@dataclass
class ShardOutput:
    """A computed shard, not yet written."""

    shard: int
    rows: list
    sketches: torch.Tensor  # [n, k] float32 (NaN where not sketched)
    finite: torch.Tensor  # [n] bool
    loss: torch.Tensor  # [n] float32
    seconds: float = 0.0


def prepare_shard(ctx: ShardContext, shard: int) -> PreparedShard:
    """Reads the shard's rows (``iter_records(start, stop)``), maps and renders them, checks them against
    the plan, and pads its planned batches. DataError when the data changed since the plan."""
    t0 = time.perf_counter()
    plan = read_shard_plan(ctx.run.plan_path, shard).to_pydict()
    start, stop = min(plan["row_id"]), max(plan["row_id"]) + 1
    records = [rec for batch in ctx.dataset.iter_records(start, stop) for rec in batch]
    rows = prepare_rows(records, ctx.fieldmap, ctx.scorer.renderer, "skip")
    if len(rows) != stop - start or any(r.row_id != start + i for i, r in enumerate(rows)):
        raise _error(f"the data changed since the plan: shard {shard} should hold rows {start}..{stop - 1} "
                     f"(rerun with --overwrite)")
    pos: dict[int, int] = {}
    batches: dict[int, list[int]] = {}
    for rid, b, n_tok, reason in zip(plan["row_id"], plan["batch"], plan["n_tokens"], plan["skipped_reason"]):
        row = rows[rid - start]
        got = row.rendered.n_tokens if row.skipped_reason is None else 0
        if row.skipped_reason != reason or (reason is None and got != n_tok):
            raise _error(f"the data changed since the plan: {row.source}:{row.line} (row {rid}) now renders "
                         f"differently (rerun with --overwrite)")
        if b >= 0:
            batches.setdefault(b, []).append(rid - start)
        pos[rid] = rid - start
    padded = [(idx, ctx.scorer.collate([rows[i].rendered for i in idx])) for _, idx in sorted(batches.items())]
    return PreparedShard(shard, rows, padded, time.perf_counter() - t0)


def compute_shard(ctx: ShardContext, prepared: PreparedShard, on_batch=None) -> ShardOutput:
    """The forward/backward passes of a prepared shard, batch by batch as planned.
    ``on_batch(n_rows)`` is called after each batch."""
    t0 = time.perf_counter()
    n, k = len(prepared.rows), ctx.scorer.k
    sketches = torch.full((n, k), float("nan"), dtype=torch.float32)
    finite = torch.zeros(n, dtype=torch.bool)
    loss = torch.full((n,), float("nan"), dtype=torch.float32)
    for idx, tensors in prepared.batches:
        s, f, lo = ctx.scorer.sketch_collated(*tensors)
        index = torch.as_tensor(idx, dtype=torch.int64)
        sketches[index], finite[index], loss[index] = s, f, lo
        if on_batch is not None:
            on_batch(len(idx))
    return ShardOutput(prepared.shard, prepared.rows, sketches, finite, loss, time.perf_counter() - t0)


def write_shard(ctx: ShardContext, out: ShardOutput) -> ShardResult:
    """Writes ``sketches/shard-NNNNN.rows.parquet`` (every row of the shard's range, row-id order) and
    ``sketches/shard-NNNNN.safetensors`` (the rows in the score), each atomically. Does not touch the
    manifest (the caller records the returned result)."""
    import json

    import prism_kernels as pk
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.torch import save_file

    from .finish import pack_lower

    run, shard = ctx.run, out.shard
    rows = out.rows
    reasons = []
    for i, r in enumerate(rows):
        reason = r.skipped_reason
        if reason is None and not bool(out.finite[i]):
            reason = NOT_FINITE
        reasons.append(reason)
    sketched = [r.skipped_reason is None for r in rows]
    keep = torch.tensor([reason is None for reason in reasons], dtype=torch.bool)
    norms = torch.linalg.vector_norm(out.sketches.double(), dim=1)
    table = pa.table({
        "row_id": pa.array([r.row_id for r in rows], pa.int64()),
        "source": pa.array([r.source for r in rows], pa.string()),
        "line": pa.array([r.line for r in rows], pa.int64()),
        "n_tokens": pa.array([r.rendered.n_tokens if r.rendered is not None else 0 for r in rows], pa.int32()),
        "n_response_tokens": pa.array([r.rendered.n_response_tokens if r.rendered is not None else 0 for r in rows],
                                      pa.int32()),
        "truncated": pa.array([bool(r.rendered.truncated) if r.rendered is not None else False for r in rows]),
        "loss": pa.array([float(out.loss[i]) if s else None for i, s in enumerate(sketched)], pa.float32()),
        "sketch_norm": pa.array([float(norms[i]) if s else None for i, s in enumerate(sketched)], pa.float32()),
        "finite": pa.array([bool(out.finite[i]) if s else None for i, s in enumerate(sketched)], pa.bool_()),
        "skipped_reason": pa.array(reasons, pa.string()),
    })
    atomic_write(run.shard_rows_path(shard), lambda tmp: pq.write_table(table, tmp))

    x = out.sketches[keep].contiguous()  # [n_i, k]
    row_id = torch.tensor([r.row_id for r in rows], dtype=torch.int64)[keep]
    state = pk.VendiState(ctx.scorer.k, normalize=True, precision="exact")
    if x.shape[0]:
        state.update(x)
    meta = {"format": "prism_kernels.score.shard/1", "shard": str(shard), "config_hash": ctx.config_hash,
            "sketch_meta": json.dumps(asdict(ctx.scorer.meta)), "rows": str(len(rows)), "sketched": str(x.shape[0])}
    tensors = {"sketches": x, "row_id": row_id, "gram": pack_lower(state.gram) if x.shape[0] else
               torch.zeros(ctx.scorer.k * (ctx.scorer.k + 1) // 2, dtype=torch.float64),
               "count": torch.tensor([float(state.count)], dtype=torch.float64)}
    atomic_write(run.shard_path(shard), lambda tmp: save_file(tensors, tmp, metadata=meta))
    skipped: dict = {}
    for reason in reasons:
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
    return ShardResult(shard, rows[0].row_id, rows[-1].row_id + 1, len(rows), int(x.shape[0]), skipped, out.seconds,
                       str(run.shard_path(shard).relative_to(run.root)),
                       str(run.shard_rows_path(shard).relative_to(run.root)))


def run_shard(context: ShardContext, shard_id: int) -> ShardResult:
    """The whole job of one shard: :func:`prepare_shard`, :func:`compute_shard`, :func:`write_shard`.

    Args:
        context: a :class:`ShardContext` (one per worker; it holds the loaded proxy).
        shard_id: the shard to run (a row group of plan.parquet).

    Returns: the :class:`ShardResult` to record in the manifest (``context.run.record_shard(result.to_json(),
    context.config_hash)``), which the caller does once the result reaches the driver. Rerunning a shard
    rewrites the same files with the same contents.
    """
    return write_shard(context, compute_shard(context, prepare_shard(context, shard_id)))


@dataclass
class Timing:
    """Seconds spent per stage of the local pipeline and the wall time; ``overlap`` is the fraction of the
    reading/rendering and writing time hidden behind the forward/backward passes."""

    prepare_s: float = 0.0
    compute_s: float = 0.0
    write_s: float = 0.0
    wall_s: float = 0.0

    @property
    def overlap(self) -> float | None:
        side = self.prepare_s + self.write_s
        if side <= 0:
            return None
        hidden = self.prepare_s + self.compute_s + self.write_s - self.wall_s
        return max(0.0, min(1.0, hidden / side))

    def to_json(self) -> dict:
        return {"prepare_s": round(self.prepare_s, 3), "compute_s": round(self.compute_s, 3),
                "write_s": round(self.write_s, 3), "wall_s": round(self.wall_s, 3),
                "overlap": None if self.overlap is None else round(self.overlap, 3)}


_DONE = object()


def _put(q: queue.Queue, item, consumer: threading.Thread) -> bool:
    """Puts ``item`` unless the consumer thread has died (then False): never blocks on a dead consumer."""
    while consumer.is_alive():
        try:
            q.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


def run_local(ctx: ShardContext, shard_ids, on_done, on_rows=None, prefetch: int = 2) -> Timing:
    """Runs shards in this process as a pipeline (reader thread -> main thread -> writer thread).

    Args:
        shard_ids: the shards to run, in order.
        on_done: ``on_done(ShardResult)``, called in the writer thread once a shard's files are written
            (it records the shard in the manifest).
        on_rows: ``on_rows(n)`` progress callback (rows sketched, and each shard's skipped rows).
        prefetch: shards prepared ahead.

    Returns: :class:`Timing`. An exception in any stage stops the pipeline and is re-raised here.
    """
    timing = Timing()
    t0 = time.perf_counter()
    prepared_q: queue.Queue = queue.Queue(maxsize=prefetch)
    written_q: queue.Queue = queue.Queue(maxsize=prefetch)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader():
        try:
            for sid in shard_ids:
                if stop.is_set():
                    break
                p = prepare_shard(ctx, sid)
                timing.prepare_s += p.seconds
                while not stop.is_set():
                    try:
                        prepared_q.put(p, timeout=0.2)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
        finally:
            prepared_q.put(_DONE)

    def writer():
        try:
            while True:
                item = written_q.get()
                if item is _DONE:
                    break
                t = time.perf_counter()
                result = write_shard(ctx, item)
                on_done(result)
                timing.write_s += time.perf_counter() - t
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=reader, name="prism-reader", daemon=True),
               threading.Thread(target=writer, name="prism-writer", daemon=True)]
    for t in threads:
        t.start()
    try:
        while not errors:
            item = prepared_q.get()
            if item is _DONE:
                break
            skipped_rows = len(item.rows) - sum(len(idx) for idx, _ in item.batches)
            out = compute_shard(ctx, item, on_batch=on_rows)
            timing.compute_s += out.seconds
            if not _put(written_q, out, threads[1]):
                break  # the writer died: its error is raised below
            if on_rows is not None and skipped_rows:
                on_rows(skipped_rows)
    finally:
        stop.set()
        _put(written_q, _DONE, threads[1])
        threads[1].join()
        while threads[0].is_alive():  # unblock a reader waiting on a full queue
            try:
                prepared_q.get_nowait()
            except queue.Empty:
                pass
            threads[0].join(timeout=0.1)
    timing.wall_s = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return timing
