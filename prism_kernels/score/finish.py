"""The finish step: from the shard files to state.safetensors, samples.parquet and summary.json.

Nothing here reads the data or runs the model; it only reads ``sketches/shard-*``:

* **merged state**: the shards' Grams (each the exact float64 ``S_s = sum_i y_i y_i^T`` of the shard's
  L2-normalised sketches, computed by ``pk.VendiState(precision="exact")`` in the worker) are added in
  shard order, so any engine, any resume, gives the same bits. ``state.safetensors`` is a saved
  ``pk.VendiState`` (``pk.VendiState.load`` reads it) that also holds every shard's own state:
  ``shard_gram`` [S, k(k+1)/2] float64 (packed lower triangles, row-major), ``shard_count`` [S] float64 and
  ``shard_id`` [S] int64. Size: ``(S + 1) * k(k+1)/2 * 8`` bytes, 4.2 MB per shard at k = 1024; it is
  written as a stream, one shard at a time, so memory stays at one Gram.
* **G-Vendi**: q = 1, 2, inf of the merged state.
* **95% interval of q = 1**: a percentile bootstrap over the shards: ``BOOTSTRAP_RESAMPLES`` resamples of
  the shard Grams with replacement (seeded by the run's seed), each scored exactly. Shards are the
  resampling unit (no second pass over the data); with more than ``BOOTSTRAP_MAX_UNITS`` shards, runs of
  consecutive shards are pooled into that many units. With fewer than ``BOOTSTRAP_MIN_SHARDS`` shards the
  interval is null and ``ci95_note`` says why. Cost: one k x k eigendecomposition per resample.
* **novelty** of sample i: its ridge leverage ``y_i^T (S + lambda I)^-1 y_i`` on its normalised sketch y_i,
  with ``S`` the merged Gram and ``lambda = NOVELTY_LAMBDA = 1`` (the weight of one sample: a sample whose
  direction no other sample shares scores about 1/2, one of m identical samples 1/(m + 1)); computed with
  one Cholesky factor of ``S + lambda I`` and a pass over the shard files.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import torch

NOVELTY_LAMBDA = 1.0
BOOTSTRAP_RESAMPLES = 100
BOOTSTRAP_MIN_SHARDS = 8
BOOTSTRAP_MAX_UNITS = 64
_VENDI_FORMAT = "prism_kernels.VendiState/1"  # pk.VendiState.save's format (pk.VendiState.load checks it)


def pack_lower(gram: torch.Tensor) -> torch.Tensor:
    """Lower triangle (diagonal included) of a [k, k] matrix, row-major, as [k(k+1)/2] float64."""
    k = gram.shape[0]
    i, j = torch.tril_indices(k, k)
    return gram.to(torch.float64)[i, j].contiguous()


def unpack_lower(packed: torch.Tensor, k: int, symmetric: bool = True) -> torch.Tensor:
    """Inverse of :func:`pack_lower`: [k(k+1)/2] -> [k, k] float64 (symmetric, or lower only)."""
    out = torch.zeros(k, k, dtype=torch.float64)
    i, j = torch.tril_indices(k, k)
    out[i, j] = packed.to(torch.float64)
    if symmetric:
        out = out + torch.tril(out, -1).T
    return out


def _open(path):
    from safetensors import safe_open

    return safe_open(str(path), framework="pt")


def _shard_gram(path) -> tuple[torch.Tensor, float]:
    with _open(path) as f:
        return f.get_tensor("gram"), float(f.get_tensor("count")[0])


def write_safetensors_stream(path, entries, metadata: dict) -> None:
    """Writes a safetensors file tensor by tensor (memory: one tensor at a time).

    Args:
        entries: list of ``(name, dtype_str, shape, producer)`` where ``producer()`` yields contiguous CPU
            tensors whose bytes, concatenated, are the tensor's data (in the order of the list).
        metadata: str -> str.
    """
    from .rundir import atomic_write

    sizes = {"F64": 8, "F32": 4, "I64": 8}
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, dt, shape, _ in entries:
        nbytes = int(np.prod(shape)) * sizes[dt] if shape else sizes[dt]
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)  # data aligned to 8 bytes, as safetensors writes it

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)))
            f.write(blob)
            for name, dt, shape, producer in entries:
                written = 0
                for t in producer():
                    data = t.contiguous().cpu().numpy().tobytes()
                    f.write(data)
                    written += len(data)
                expect = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
                if written != expect:
                    raise RuntimeError(f"{name}: wrote {written} bytes, expected {expect}")

    atomic_write(path, write)


def merge_states(run, shard_ids: list[int], k: int) -> tuple[torch.Tensor, float, int]:
    """Sum of the shard Grams (full symmetric [k, k] float64), the total count and rows, in shard order."""
    total = torch.zeros(k * (k + 1) // 2, dtype=torch.float64)
    count = 0.0
    rows = 0
    for s in shard_ids:
        g, c = _shard_gram(run.shard_path(s))
        total += g
        count += c
        rows += int(round(c))
    return total, count, rows


def write_state(run, shard_ids: list[int], k: int, merged_packed: torch.Tensor, count: float, rows: int) -> None:
    """state.safetensors: the merged pk.VendiState (exact, normalised) + every shard's packed Gram."""
    lower = unpack_lower(merged_packed, k, symmetric=False)
    entries = [
        ("count", "F64", [1], lambda: [torch.tensor([count], dtype=torch.float64)]),
        ("gram", "F64", [k, k], lambda: [lower]),
        ("rows", "I64", [1], lambda: [torch.tensor([rows], dtype=torch.int64)]),
        ("shard_count", "F64", [len(shard_ids)],
         lambda: [torch.tensor([_shard_gram(run.shard_path(s))[1] for s in shard_ids], dtype=torch.float64)]),
        ("shard_gram", "F64", [len(shard_ids), k * (k + 1) // 2],
         lambda: (_shard_gram(run.shard_path(s))[0] for s in shard_ids)),
        ("shard_id", "I64", [len(shard_ids)], lambda: [torch.tensor(shard_ids, dtype=torch.int64)]),
    ]
    meta = {"format": _VENDI_FORMAT, "dim": str(k), "normalize": "True", "precision": "exact",
            "shards": str(len(shard_ids))}
    write_safetensors_stream(run.state_path, entries, meta)


def _q1_from_packed(packed: torch.Tensor, count: float, k: int) -> float:
    lam = torch.linalg.eigvalsh(unpack_lower(packed, k) / count).clamp_min(0.0)
    pos = lam[lam > 0]
    return float(torch.exp(-(pos * torch.log(pos)).sum()))


def bootstrap_q1(run, shard_ids: list[int], k: int, seed: int) -> tuple[list[float] | None, str]:
    """95% percentile bootstrap interval of G-Vendi q = 1 over the shards (see the module docstring).

    Returns: ``([lo, hi], note)`` or ``(None, reason)``.
    """
    usable = []
    for s in shard_ids:
        with _open(run.shard_path(s)) as f:
            if float(f.get_tensor("count")[0]) > 0:
                usable.append(s)
    if len(usable) < BOOTSTRAP_MIN_SHARDS:
        return None, (f"the bootstrap needs >= {BOOTSTRAP_MIN_SHARDS} shards with scored rows, this run has "
                      f"{len(usable)}; use a smaller --shard-rows for an interval")
    n_units = min(len(usable), BOOTSTRAP_MAX_UNITS)
    groups = np.array_split(np.arange(len(usable)), n_units)  # consecutive shards pooled
    units = torch.zeros(n_units, k * (k + 1) // 2, dtype=torch.float64)
    counts = torch.zeros(n_units, dtype=torch.float64)
    for u, g in enumerate(groups):
        for i in g:
            gram, c = _shard_gram(run.shard_path(usable[int(i)]))
            units[u] += gram
            counts[u] += c
    return bootstrap_q1_of_units(units, counts, k, seed), (
        f"percentile bootstrap: {BOOTSTRAP_RESAMPLES} resamples of {n_units} units ({len(usable)} shards)")


def bootstrap_q1_of_units(units: torch.Tensor, counts: torch.Tensor, k: int, seed: int,
                          resamples: int = BOOTSTRAP_RESAMPLES) -> list[float]:
    """95% percentile bootstrap interval ``[lo, hi]`` of G-Vendi q = 1 from per-unit Gram sums.

    Args:
        units: ``[U, k(k+1)/2]`` float64 packed lower triangles of each unit's sum of ``x xᵀ``.
        counts: ``[U]`` float64 rows per unit.
        k: sketch width.
        seed: the resampling generator's seed (numpy ``default_rng``).
        resamples: bootstrap resamples (units drawn with replacement, U per resample).
    """
    n_units = units.shape[0]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_units, size=(resamples, n_units))
    values = []
    for row in draws:
        mult = torch.from_numpy(np.bincount(row, minlength=n_units).astype(np.float64))
        values.append(_q1_from_packed(mult @ units, float(mult @ counts), k))
    lo, hi = np.percentile(np.array(values), [2.5, 97.5])
    return [float(lo), float(hi)]


def novelty_pass(run, shard_ids: list[int], merged_packed: torch.Tensor, k: int):
    """Yields ``(shard_id, row_id [n_i] int64, novelty [n_i] float64)`` per shard: the ridge leverage of
    every scored row (module docstring)."""
    gram = unpack_lower(merged_packed, k)
    chol = torch.linalg.cholesky(gram + NOVELTY_LAMBDA * torch.eye(k, dtype=torch.float64))
    for s in shard_ids:
        with _open(run.shard_path(s)) as f:
            x = f.get_tensor("sketches").to(torch.float64)  # [n_i, k]
            row_id = f.get_tensor("row_id")
        if x.shape[0] == 0:
            yield s, row_id, torch.zeros(0, dtype=torch.float64)
            continue
        y = x / torch.linalg.vector_norm(x, dim=1, keepdim=True)
        z = torch.linalg.solve_triangular(chol, y.T, upper=False)  # [k, n_i]
        yield s, row_id, (z * z).sum(0)


def write_samples(run, shard_ids: list[int], merged_packed: torch.Tensor, k: int) -> None:
    """samples.parquet: the shards' per-row tables in row-id order with the ``novelty`` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .rundir import atomic_write

    def write(tmp):
        writer = None
        try:
            for s, row_id, nov in novelty_pass(run, shard_ids, merged_packed, k):
                table = pq.read_table(run.shard_rows_path(s))
                values = dict(zip(row_id.tolist(), nov.tolist()))
                col = pa.array([values.get(r) for r in table.column("row_id").to_pylist()], pa.float64())
                table = table.append_column("novelty", col)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()

    atomic_write(run.samples_path, write)


def gvendi(run) -> tuple[dict, list[float]]:
    """G-Vendi q = 1, 2, inf of the merged state in state.safetensors (read with pk.VendiState.load) and its
    spectrum (eigenvalues of S / n, descending). Two eigendecompositions, not three: q = inf is 1 / the
    largest eigenvalue of the spectrum (what ``state.score("inf")`` computes, bit for bit)."""
    import prism_kernels as pk

    state = pk.VendiState.load(run.state_path)
    lam = state.spectrum()
    return {"q1": state.score(1), "q2": state.score(2), "inf": float(1.0 / lam.max())}, lam.tolist()


def finish(run, shard_ids: list[int], k: int, seed: int) -> dict:
    """Writes state.safetensors and samples.parquet; returns the numbers of the summary:
    ``{"n", "gvendi", "ci95", "ci95_note", "spectrum" (eigenvalues, descending)}``."""
    merged, count, rows = merge_states(run, shard_ids, k)
    if rows == 0:
        from ..data import DataError

        raise DataError("no row could be scored (every row was skipped or not finite); see the skipped counts")
    write_state(run, shard_ids, k, merged, count, rows)
    scores, spectrum = gvendi(run)
    write_samples(run, shard_ids, merged, k)
    ci, note = bootstrap_q1(run, shard_ids, k, seed)
    return {"n": rows, "gvendi": scores, "ci95": {"q1": ci}, "ci95_note": note, "spectrum": spectrum}
