"""Pass 1: the deterministic batch plan.

Every input row is read, its record mapped to a Sample and rendered (token lengths, truncation, skip
reasons). Shards are contiguous row-id ranges of ``shard_rows`` rows; within a shard the rows are sorted
by token length (stable: ties by row_id) and cut into batches whose padded size (rows x longest row) is
at most ``batch_tokens`` (a row longer than that is a batch of its own). The plan is written to
``plan.parquet``, one row group per shard, rows in execution order (batch by batch; the shard's skipped
rows last, with batch = -1). It depends only on the data, the tokenizer and the options, so a resumed
run executes exactly the same batches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Sequence

PLAN_META_KEY = b"prism_kernels.plan"

#: skip reasons set here (the renderer adds its own, e.g. "empty_response", "template_error")
MALFORMED = "malformed_record"
INVALID = "invalid_record"
NO_TARGETS = "no_response_tokens"
NOT_FINITE = "not_finite"


def _error(msg: str):
    from ..data import DataError

    return DataError(msg)


@dataclass
class Row:
    """One input row after field mapping and rendering.

    rendered: the :class:`~prism_kernels.data.Rendered` sample (None when the record could not be mapped).
    skipped_reason: None when the row is sketched, else why not. message: a one-line description of a
    bad row (``source:line: what``), for reports.
    """

    row_id: int
    source: str
    line: int
    rendered: object | None
    skipped_reason: str | None
    message: str | None = None


def prepare_rows(records: Sequence, fieldmap, renderer, on_bad_record: str = "skip") -> list[Row]:
    """Maps and renders a batch of :class:`~prism_kernels.data.Record` s.

    Args:
        records: [n] Records (``data`` None for a malformed one).
        fieldmap: :class:`~prism_kernels.data.FieldMap`.
        renderer: :class:`~prism_kernels.data.Renderer`.
        on_bad_record: "skip" (bad rows get a skipped_reason) or "fail" (DataError naming file and line).

    Returns: [n] :class:`Row`, in input order.
    """
    from ..data import DataError

    rows: list[Row | None] = [None] * len(records)
    samples, where = [], []
    for i, rec in enumerate(records):
        loc = f"{rec.source}:{rec.line}"
        if rec.data is None:
            rows[i] = Row(rec.row_id, rec.source, rec.line, None, MALFORMED, f"{loc}: {rec.error}")
            continue
        try:
            samples.append(fieldmap.extract(rec.data))
            where.append(i)
        except DataError as exc:
            rows[i] = Row(rec.row_id, rec.source, rec.line, None, INVALID, f"{loc}: {exc}")
    rendered = renderer.render_many(samples) if samples else []
    for i, r in zip(where, rendered):
        rec = records[i]
        reason = r.skipped_reason
        if reason is None and r.n_tokens - max(r.response_start, 1) < 1:
            reason = NO_TARGETS  # nothing left to predict (e.g. the response was cut away)
        msg = None if reason is None else f"{rec.source}:{rec.line}: skipped ({reason.replace('_', ' ')})"
        rows[i] = Row(rec.row_id, rec.source, rec.line, r, reason, msg)
    if on_bad_record == "fail":
        bad = next((r for r in rows if r.skipped_reason is not None), None)
        if bad is not None:
            raise _error(f"{bad.message} (--on-bad-record fail; use --on-bad-record skip to leave such rows out)")
    return rows  # type: ignore[return-value]


def cut_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Length-sorted batches.

    Args:
        lengths: [n] token lengths.
        batch_tokens: the most padded tokens (rows x longest row) per batch.

    Returns: batches as lists of indexes into ``lengths``: sorted by (length, index), cut greedily so that
    ``len(batch) * max(length in batch) <= batch_tokens`` (at least one row per batch).
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def plan_schema():
    import pyarrow as pa

    return pa.schema([("row_id", pa.int64()), ("shard", pa.int32()), ("batch", pa.int32()),
                      ("n_tokens", pa.int32()), ("n_response_tokens", pa.int32()), ("truncated", pa.bool_()),
                      ("skipped_reason", pa.string()), ("source", pa.string()), ("line", pa.int64())])


def shard_plan_table(shard: int, rows: Sequence[Row], batch_tokens: int):
    """The plan rows of one shard (a pyarrow Table in execution order) for its :class:`Row` s."""
    import pyarrow as pa

    live = [r for r in rows if r.skipped_reason is None]
    batches = cut_batches([r.rendered.n_tokens for r in live], batch_tokens)
    ordered: list[tuple[Row, int]] = [(live[i], b) for b, idx in enumerate(batches) for i in idx]
    ordered += [(r, -1) for r in rows if r.skipped_reason is not None]
    cols = {
        "row_id": [r.row_id for r, _ in ordered],
        "shard": [shard] * len(ordered),
        "batch": [b for _, b in ordered],
        "n_tokens": [r.rendered.n_tokens if r.rendered is not None else 0 for r, _ in ordered],
        "n_response_tokens": [r.rendered.n_response_tokens if r.rendered is not None else 0 for r, _ in ordered],
        "truncated": [bool(r.rendered.truncated) if r.rendered is not None else False for r, _ in ordered],
        "skipped_reason": [r.skipped_reason for r, _ in ordered],
        "source": [r.source for r, _ in ordered],
        "line": [r.line for r, _ in ordered],
    }
    return pa.table(cols, schema=plan_schema())


@dataclass
class PlanInfo:
    """What pass 1 found: ``shards`` [(start, stop)] row ranges, totals and the first bad rows."""

    n_rows: int
    shards: list[tuple[int, int]]
    n_batches: int
    skipped: dict
    truncated: int
    bad_examples: list[str]

    def to_json(self) -> dict:
        return {"n_rows": self.n_rows, "shards": [list(s) for s in self.shards], "n_batches": self.n_batches,
                "skipped": self.skipped, "truncated": self.truncated, "bad_examples": self.bad_examples}

    @classmethod
    def from_json(cls, d: dict) -> "PlanInfo":
        return cls(d["n_rows"], [tuple(s) for s in d["shards"]], d["n_batches"], d["skipped"], d["truncated"],
                   d["bad_examples"])


def _shard_chunks(batches: Iterable[list], shard_rows: int):
    """Regroups record batches (row ids consecutive from 0) into per-shard lists."""
    cur: list = []
    shard = 0
    for batch in batches:
        for rec in batch:
            s = rec.row_id // shard_rows
            if s != shard:
                if cur:
                    yield shard, cur
                cur, shard = [], s
            cur.append(rec)
    if cur:
        yield shard, cur


def build_plan(path, dataset, fieldmap, renderer, *, shard_rows: int, batch_tokens: int,
               limit: int | None = None, on_bad_record: str = "skip", on_rows=None) -> PlanInfo:
    """Pass 1: streams the dataset, renders every row and writes ``plan.parquet`` atomically at ``path``.

    Memory is bounded by one shard's rows (records are regrouped per shard as they stream).
    ``on_rows(n)`` is called as rows are planned (progress). Empty dataset -> DataError.
    """
    import pyarrow.parquet as pq

    from .rundir import atomic_write

    info = PlanInfo(0, [], 0, {}, 0, [])

    def write(tmp):
        writer = pq.ParquetWriter(tmp, plan_schema())
        try:
            stream = dataset.iter_records(0, limit, batch_rows=min(1024, shard_rows))
            for shard, records in _shard_chunks(stream, shard_rows):
                if shard != len(info.shards) or records[0].row_id != shard * shard_rows:
                    raise RuntimeError(f"row ids are not consecutive at row {records[0].row_id}")  # reader contract
                rows = prepare_rows(records, fieldmap, renderer, on_bad_record)
                table = shard_plan_table(shard, rows, batch_tokens)
                writer.write_table(table, row_group_size=max(1, table.num_rows))
                info.shards.append((records[0].row_id, records[-1].row_id + 1))
                info.n_rows += len(rows)
                info.n_batches += len(set(b for b in table.column("batch").to_pylist() if b >= 0))
                for r in rows:
                    if r.skipped_reason is not None:
                        info.skipped[r.skipped_reason] = info.skipped.get(r.skipped_reason, 0) + 1
                        if len(info.bad_examples) < 5:
                            info.bad_examples.append(r.message)
                    elif r.rendered.truncated:
                        info.truncated += 1
                if on_rows is not None:
                    on_rows(len(rows))
            if info.n_rows == 0:
                names = ", ".join(s.path for s in dataset.sources)
                raise _error(f"DATA: no records in {names} (empty dataset)")
            writer.add_key_value_metadata({PLAN_META_KEY.decode(): json.dumps(info.to_json())})
        finally:
            writer.close()

    atomic_write(path, write)
    return info


def read_plan_info(path) -> PlanInfo:
    """The :class:`PlanInfo` stored in plan.parquet's metadata."""
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path).metadata or {}
    return PlanInfo.from_json(json.loads(meta[PLAN_META_KEY]))


def read_shard_plan(path, shard: int):
    """The plan rows of one shard (its row group), as a pyarrow Table in execution order."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read_row_group(shard)
