"""The G-Vendi summary of sketch rows written by a pipeline (e.g. NeMo Curator's writers after
:class:`~prism_kernels.integrations.nemo_curator.GradientSketchStage`), read as a stream.

The rows carry the columns the sketch stage adds (``PREFIX`` + name):

========================  ============================================================================
``sketch``                fixed-size list of k float32 (null when the row is not in the score)
``loss``                  float32, the mean next-token loss over the response tokens (null if not computed)
``n_tokens``              int32, ``n_response_tokens`` int32, ``truncated`` bool (as samples.parquet)
``sketch_norm``           float32, the L2 norm of the raw sketch (null when not sketched)
``finite``                bool (null when not sketched)
``skipped_reason``        string, null when the row is in the score (the reasons of ``prism score``)
``sketch_meta``           string, JSON of :class:`prism_kernels.SketchMeta` (the same on every row)
``sketch_source``         string, the input file(s) of the row's Curator task
``sketch_position``       int64, the row's 0-based position in its task
========================  ============================================================================

:func:`gvendi_from_output` orders the rows by (``sketch_source``, ``sketch_position``) — the input order
when the reader reads whole files, as Curator's JSONL/Parquet readers do — and cuts them into
``shard_rows`` shards exactly as ``prism score`` cuts its input, so the bootstrap interval uses the same
units as ``prism score --shard-rows`` on the same data. It reads the output twice (pass 1: the small
columns, to rank the rows; pass 2: the sketches, accumulated into the merged Gram and the bootstrap
units), never holding more than one record batch of sketches in memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np

SUMMARY_FORMAT = "prism_kernels.integrations.gvendi_from_output/1"
#: names of the columns the sketch stage adds (without the prefix)
COLUMNS = ("sketch", "loss", "n_tokens", "n_response_tokens", "truncated", "sketch_norm", "finite",
           "skipped_reason", "sketch_meta", "sketch_source", "sketch_position")
_PASS1 = ("skipped_reason", "sketch_meta", "sketch_source", "sketch_position")
_SUFFIXES = (".parquet", ".jsonl", ".json", ".jsonl.gz", ".json.gz")


def _error(msg: str):
    from ..data import DataError

    return DataError(msg)


# ----------------------------------------------------------------------------------------- reading


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz")):
        return "jsonl"
    return None


def _expand(source) -> list:
    """The sources as a list of ``Path`` files (directories expanded, sorted) or in-memory objects."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and _kind(p) is not None
                           and not p.name.startswith("."))
            if not files:
                raise _error(f"{path}: no .parquet or .jsonl files in this folder")
            return files
        if not path.exists():
            raise _error(f"{path}: no such file or folder")
        if _kind(path) is None:
            raise _error(f"{path}: not a .parquet or .jsonl file")
        return [path]
    if isinstance(source, (list, tuple)):
        out = []
        for item in source:
            out.extend(_expand(item))
        return out
    # A Curator task: FileGroupTask (written files) or DocumentBatch (rows in memory).
    if type(source).__name__ == "FileGroupTask" and isinstance(getattr(source, "data", None), list):
        return _expand(list(source.data))
    return [source]


def _table_batches(obj, columns: list[str]) -> Iterator[tuple[str, object]]:
    """Record batches (pyarrow Tables holding the present ``columns``) of one in-memory object."""
    import pyarrow as pa

    if hasattr(obj, "to_pyarrow") and hasattr(obj, "task_id"):  # a Curator DocumentBatch
        table = obj.to_pyarrow()
        yield f"task {obj.task_id or '?'}", table.select([c for c in columns if c in table.column_names])
        return
    if isinstance(obj, pa.Table):
        table = obj.select([c for c in columns if c in obj.column_names])
        for i, b in enumerate(table.to_batches(max_chunksize=4096)):
            yield f"table batch {i}", pa.Table.from_batches([b])
        return
    if type(obj).__module__.startswith("pandas"):
        table = pa.Table.from_pandas(obj, preserve_index=False)
        yield from _table_batches(table, columns)
        return
    if hasattr(obj, "iter_batches") and type(obj).__module__.startswith("ray.data"):  # ray.data.Dataset
        present = [c for c in columns if c in obj.schema().names]
        for i, b in enumerate(obj.select_columns(present).iter_batches(batch_format="pyarrow", batch_size=4096)):
            yield f"ray batch {i}", b
        return
    if type(obj).__module__.startswith("datasets"):  # a datasets.Dataset (Arrow-backed)
        present = [c for c in columns if c in obj.column_names]
        for i, b in enumerate(obj.select_columns(present).with_format("arrow").iter(batch_size=4096)):
            yield f"dataset batch {i}", b
        return
    raise _error(f"output: cannot read {type(obj).__name__}; pass Parquet/JSONL files, a folder of them, "
                 f"the tasks pipeline.run returned, a pyarrow Table, a pandas DataFrame, a ray.data or "
                 f"datasets Dataset")


def _jsonl_batches(path: Path, columns: list[str], sketch_col: str, rows: int = 1024) -> Iterator[tuple[str, object]]:
    """pyarrow Tables of ``rows`` lines of a JSONL file (parsed line by line; only ``columns`` kept)."""
    import gzip

    import pyarrow as pa

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    buf: dict[str, list] = {c: [] for c in columns}
    first = 1
    seen: set[str] = set()

    def flush(first_line: int, last_line: int):
        present = [c for c in columns if c in seen]
        data = {}
        for c in present:
            if c == sketch_col:
                data[c] = pa.array(buf[c], pa.list_(pa.float64()))
            else:
                data[c] = pa.array(buf[c])
        return f"{path}:{first_line}-{last_line}", pa.table(data) if data else pa.table({})

    n = 0
    line_no = 0
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise _error(f"{path}:{line_no}: invalid JSON: {str(exc).splitlines()[0]}") from None
            if not isinstance(rec, dict):
                raise _error(f"{path}:{line_no}: a JSON object per line expected, got {type(rec).__name__}")
            for c in columns:
                if c in rec:
                    seen.add(c)
                buf[c].append(rec.get(c))
            n += 1
            if n == rows:
                yield flush(first, line_no)
                buf = {c: [] for c in columns}
                n, first = 0, line_no + 1
    if n:
        yield flush(first, line_no)


def _batches(items: list, columns: list[str], sketch_col: str) -> Iterator[tuple[str, object]]:
    import pyarrow.parquet as pq

    for item in items:
        if isinstance(item, Path):
            if _kind(item) == "parquet":
                try:
                    pf = pq.ParquetFile(item)
                except Exception as exc:  # noqa: BLE001 - unreadable file: one line naming it
                    raise _error(f"{item}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
                present = [c for c in columns if c in pf.schema_arrow.names]
                start = 0
                for b in pf.iter_batches(batch_size=1024, columns=present):
                    import pyarrow as pa

                    yield f"{item}:rows {start}-{start + b.num_rows - 1}", pa.Table.from_batches([b])
                    start += b.num_rows
            else:
                yield from _jsonl_batches(item, columns, sketch_col)
        else:
            yield from _table_batches(item, columns)


# ----------------------------------------------------------------------------------------- summary


def _sketch_rows(table, col: str, where: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The non-null sketches of ``table[col]`` as ``(rows [m] int64 positions in the batch, x [m, k] float32)``.

    DataError naming ``where`` for a row whose width is not k or that holds a null/NaN/Inf value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = table.column(col).combine_chunks()
    if pa.types.is_null(arr.type):
        return np.zeros(0, np.int64), np.zeros((0, k), np.float32)
    if not (pa.types.is_fixed_size_list(arr.type) or pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise _error(f"{where}: column {col!r} must hold lists of k floats, has type {arr.type}")
    valid = np.asarray(pc.is_valid(arr).to_numpy(zero_copy_only=False), dtype=bool)
    rows = np.flatnonzero(valid)
    if rows.size == 0:
        return rows.astype(np.int64), np.zeros((0, k), np.float32)
    kept = arr.filter(pa.array(valid))
    if pa.types.is_fixed_size_list(kept.type):
        widths = np.full(len(kept), kept.type.list_size)
    else:
        widths = np.asarray(pc.list_value_length(kept).to_numpy(zero_copy_only=False))
    bad = np.flatnonzero(widths != k)
    if bad.size:
        i = int(bad[0])
        raise _error(f"{where}: row {int(rows[i])} has a {col!r} of width {int(widths[i])}, expected k = {k} "
                     f"(from its sketch metadata)")
    values = kept.flatten()
    if values.null_count:
        raise _error(f"{where}: column {col!r} holds a null value inside a sketch")
    x = np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(kept), k)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise _error(f"{where}: row {int(rows[i])} has a NaN or Inf in {col!r}")
    return rows.astype(np.int64), x


def gvendi_from_output(output, *, prefix: str = "", shard_rows: int = 1024, seed: int | None = None) -> dict:
    """G-Vendi (q = 1, 2, inf), its bootstrap interval, n and the skipped counts of sketch rows written by a
    pipeline — the numbers of ``prism score``'s summary.json.

    Args:
        output: where the rows are: a Parquet/JSONL file, a folder of them (Curator's writer output), a list
            of those, the tasks ``Pipeline.run`` returned (``FileGroupTask`` s of written files, or
            ``DocumentBatch`` es), a pyarrow Table, a pandas DataFrame, a ``ray.data.Dataset`` or a
            ``datasets.Dataset``.
        prefix: the column-name prefix given to the sketch stage.
        shard_rows: rows per bootstrap shard (``prism score --shard-rows``; 1024 by default as there).
        seed: the bootstrap's seed; default the sketch seed (as ``prism score``).

    Returns: a dict with ``format``, ``n`` (rows in the score), ``rows`` (all rows), ``skipped``
    {reason: count}, ``truncated``, ``gvendi`` {q1, q2, inf}, ``ci95`` {q1: [lo, hi] or None},
    ``ci95_note``, ``shards``, ``bootstrap_resamples``, ``sketch_meta`` (dict).

    Raises DataError (one line, naming the file and row) for: missing sketch columns, rows whose sketch
    metadata differ (sketches of another model/k/kind/seed are not comparable), a sketch whose width is
    not the metadata's k, a NaN/Inf inside a scored sketch, no scored row.
    """
    import torch

    import prism_kernels as pk
    from ..score.finish import (BOOTSTRAP_MAX_UNITS, BOOTSTRAP_MIN_SHARDS, BOOTSTRAP_RESAMPLES,
                                bootstrap_q1_of_units)

    if isinstance(shard_rows, bool) or not isinstance(shard_rows, int) or shard_rows < 1:
        raise ValueError(f"shard_rows must be an int >= 1, got {shard_rows!r}")
    names = {c: prefix + c for c in COLUMNS}
    col_sketch = names["sketch"]
    items = _expand(output)

    # Pass 1: every row's order key, reason and whether it is in the score; the sketch metadata.
    sources: list[str] = []
    positions: list[np.ndarray] = []
    scored: list[np.ndarray] = []
    skipped: dict[str, int] = {}
    truncated = 0
    meta_text: str | None = None
    meta_where = ""
    pass1 = [names[c] for c in _PASS1] + [col_sketch, names["truncated"]]
    n_batches = 0
    for where, table in _batches(items, pass1, col_sketch):
        n_batches += 1
        n = table.num_rows
        if n == 0:
            continue
        for c in (col_sketch, names["sketch_meta"]):
            if c not in table.column_names:
                raise _error(f"{where}: no column {c!r} (write the output of GradientSketchStage with all its "
                             f"columns{'' if not prefix else f', prefix {prefix!r}'})")
        metas = table.column(names["sketch_meta"]).to_pylist()
        for i, m in enumerate(metas):
            if m != meta_text:
                if meta_text is None:
                    meta_text, meta_where = m, f"{where} row {i}"
                else:
                    diff = _meta_diff(meta_text, m)
                    raise _error(f"{where}: row {i} has other sketch metadata than {meta_where} ({diff}); "
                                 f"sketches of different settings cannot be scored together")
        valid = np.asarray(table.column(col_sketch).is_valid().to_numpy(zero_copy_only=False), dtype=bool) \
            if n else np.zeros(0, bool)
        scored.append(valid)
        src = table.column(names["sketch_source"]).to_pylist() if names["sketch_source"] in table.column_names \
            else [where.split(":")[0]] * n
        pos = table.column(names["sketch_position"]).to_numpy(zero_copy_only=False) \
            if names["sketch_position"] in table.column_names else np.arange(n)
        sources.extend("" if s is None else str(s) for s in src)
        positions.append(np.asarray(pos, dtype=np.int64))
        if names["skipped_reason"] in table.column_names:
            for r in table.column(names["skipped_reason"]).to_pylist():
                if r is not None:
                    skipped[r] = skipped.get(r, 0) + 1
        if names["truncated"] in table.column_names:
            truncated += int(sum(bool(t) for t in table.column(names["truncated"]).to_pylist() if t is not None))
    if n_batches == 0 or meta_text is None:
        raise _error(f"{_describe(output)}: no rows")
    try:
        meta = json.loads(meta_text)
        k = int(meta["k"])
    except (ValueError, TypeError, KeyError):
        raise _error(f"{meta_where}: column {names['sketch_meta']!r} is not a sketch metadata JSON") from None
    scored_all = np.concatenate(scored)
    n_rows = scored_all.size
    if not scored_all.any():
        raise _error(f"{_describe(output)}: no row could be scored (every row was skipped or not finite); "
                     f"skipped: {skipped}")

    # Rank the rows by (source, position) and cut the ranks into shards as prism score cuts row ids.
    src_codes = np.unique(np.array(sources, dtype=object), return_inverse=True)[1].reshape(-1)
    pos_all = np.concatenate(positions)
    order = np.lexsort((pos_all, src_codes))  # order[r] = read index of the row of rank r
    rank = np.empty(n_rows, dtype=np.int64)
    rank[order] = np.arange(n_rows)
    shard_of = rank // shard_rows  # [n_rows] in read order
    usable = np.unique(shard_of[scored_all])  # shards with scored rows, ascending
    n_units = min(len(usable), BOOTSTRAP_MAX_UNITS)
    unit_of_shard = np.full(int(shard_of.max()) + 1, -1, dtype=np.int64)
    for u, g in enumerate(np.array_split(np.arange(len(usable)), max(n_units, 1))):
        unit_of_shard[usable[g]] = u  # consecutive shards pooled, as prism score does
    unit_of = unit_of_shard[shard_of]

    # Pass 2: the sketches, into the merged state and the bootstrap units.
    state = pk.VendiState(k, normalize=True, precision="exact")
    tri = k * (k + 1) // 2
    units = torch.zeros(max(n_units, 1), tri, dtype=torch.float64)
    counts = torch.zeros(max(n_units, 1), dtype=torch.float64)
    tril = torch.tril_indices(k, k)
    offset = 0
    for where, table in _batches(items, [col_sketch], col_sketch):
        n = table.num_rows
        if n == 0:
            continue
        rows, x = _sketch_rows(table, col_sketch, where, k)
        if offset + n > n_rows or not np.array_equal(np.flatnonzero(scored_all[offset:offset + n]), rows):
            raise _error(f"{where}: the output changed while it was read")
        if rows.size:
            xt = torch.from_numpy(np.array(x, dtype=np.float32))  # a writable copy
            state.update(xt)
            y = xt.double()
            y = y / torch.linalg.vector_norm(y, dim=1, keepdim=True)
            u_of = unit_of[offset + rows]
            for u in np.unique(u_of):
                sel = torch.from_numpy(np.flatnonzero(u_of == u))
                g = y[sel].T @ y[sel]
                units[int(u)] += g[tril[0], tril[1]]
                counts[int(u)] += float(sel.numel())
        offset += n
    if offset != n_rows:
        raise _error(f"{_describe(output)}: the output changed while it was read")

    gvendi = {"q1": state.score(1), "q2": state.score(2), "inf": state.score("inf")}
    boot_seed = int(meta.get("seed", 0)) if seed is None else int(seed)
    if len(usable) < BOOTSTRAP_MIN_SHARDS:
        ci, note = None, (f"the bootstrap needs >= {BOOTSTRAP_MIN_SHARDS} shards with scored rows, this output "
                          f"has {len(usable)}; use a smaller shard_rows for an interval")
    else:
        ci, note = bootstrap_q1_of_units(units, counts, k, boot_seed), (
            f"percentile bootstrap: {BOOTSTRAP_RESAMPLES} resamples of {n_units} units ({len(usable)} shards)")
    return {
        "format": SUMMARY_FORMAT,
        "n": int(scored_all.sum()),
        "rows": int(n_rows),
        "skipped": dict(sorted(skipped.items())),
        "truncated": truncated,
        "gvendi": gvendi,
        "ci95": {"q1": ci},
        "ci95_note": note,
        "shards": int(shard_of.max()) + 1,
        "shard_rows": shard_rows,
        "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
        "sketch_meta": meta,
    }


def _meta_diff(a: str, b) -> str:
    try:
        da, db = json.loads(a), json.loads(b)
        keys = sorted(set(da) | set(db))
        diff = [f"{key}: {da.get(key)!r} vs {db.get(key)!r}" for key in keys if da.get(key) != db.get(key)]
        return "; ".join(diff) or "different text"
    except (TypeError, ValueError):
        return f"{b!r} is not sketch metadata"


def _describe(output) -> str:
    if isinstance(output, (str, os.PathLike)):
        return str(output)
    return "output"
