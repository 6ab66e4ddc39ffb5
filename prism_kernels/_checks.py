"""The one validation path of the public wrappers: arguments in, clear errors naming the argument.

Every user mistake found here raises ``ValueError`` with one line that names the argument (wrong
type, shape, dtype, range, NaN ...), whichever op it is passed to. The compiled ops re-check only
what would read or write out of bounds.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)

#: Largest number of groups one grouped call accepts (its per-group outputs are allocated up front).
MAX_GROUPS = 1 << 28


def describe(value) -> str:
    """``dtype [shape]`` of a tensor, else the type's name: what an error message says was passed."""
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} {list(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"numpy {value.dtype} {list(value.shape)}"
    return type(value).__name__


def as_tensor(value, name: str) -> torch.Tensor:
    """``value`` as a tensor: tensors pass through, numpy arrays are wrapped, nested sequences are
    converted; anything else (None, ragged lists, strings) is a ValueError naming ``name``."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise ValueError(f"{name} must be a numeric array, got a numpy object array")
        return torch.from_numpy(np.ascontiguousarray(value))
    if value is None or isinstance(value, (str, bytes, dict)):
        raise ValueError(f"{name} must be a torch tensor or numpy array, got {describe(value)}")
    try:
        return torch.as_tensor(value)
    except Exception:  # noqa: BLE001 - re-raised with the argument's name
        raise ValueError(f"{name} must be a torch tensor, numpy array or a regular (not ragged) nested "
                         f"sequence of numbers, got {describe(value)}") from None


def check_int(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as a Python int in ``[low, high)`` (either bound optional). Booleans, floats (even
    ``2.0``) and strings are rejected rather than truncated."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.dtype.is_floating_point \
            and value.dtype != torch.bool and not value.dtype.is_complex:
        value = int(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value >= high):
        if low is not None and high is not None:
            raise ValueError(f"{name} must be in [{low}, {high}), got {value}")
        raise ValueError(f"{name} must be " + (f">= {low}" if low is not None else f"< {high}") + f", got {value}")
    return value


def check_real(value, name: str, low: float | None = None, high: float | None = None, *,
               low_open: bool = False, finite: bool = True) -> float:
    """``value`` as a float (no bool, no complex, never NaN) in the given range; ``finite`` also
    rejects +-inf. ``low_open`` makes the lower bound exclusive."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.dtype.is_complex \
            and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got NaN")
    if finite and math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_bool(value, name: str) -> bool:
    """``value`` if it is a bool (numpy bools accepted), else a ValueError."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_choice(value, name: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_int_tuple(value, length: int, name: str, minimum: int = 1) -> tuple[int, ...]:
    """An int (repeated) or a sequence of ``length`` ints, each >= ``minimum``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        items = [value] * length
    elif isinstance(value, (str, bytes)) or value is None:
        raise ValueError(f"{name} must be an int or a sequence of {length} ints, got {value!r}")
    else:
        try:
            items = list(value)
        except TypeError:
            raise ValueError(f"{name} must be an int or a sequence of {length} ints, got {value!r}") from None
    if len(items) != length:
        raise ValueError(f"{name} must be an int or a sequence of {length} ints, got {value!r}")
    out = []
    for item in items:
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, np.integer)):
            raise ValueError(f"{name} must contain ints, got {value!r}")
        if int(item) < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
        out.append(int(item))
    return tuple(out)


def check_rows(x, name: str, dim: int | None = None) -> torch.Tensor:
    """``x`` as a 2-D ``[n, d]`` floating tensor (float16/bfloat16/float32/float64), d >= 1, and
    ``d == dim`` when given."""
    t = as_tensor(x, name)
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D [n, d] tensor, got shape {tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if dim is not None and t.shape[1] != dim:
        raise ValueError(f"{name} must have d = {dim} columns, got shape {tuple(t.shape)}")
    if t.shape[1] == 0:
        raise ValueError(f"{name} must have at least one column, got shape {tuple(t.shape)}")
    return t


def check_q(q) -> float:
    """The order q of a Vendi score: a number > 0 (NaN rejected), or ``inf`` / ``"inf"``."""
    if isinstance(q, str):
        if q.lower() in ("inf", "infinity"):
            return math.inf
        raise ValueError(f"q must be a number > 0 or 'inf', got {q!r}")
    return check_real(q, "q", 0.0, low_open=True, finite=False)


def check_groups(groups, n: int, device: torch.device, num_groups=None) -> tuple[torch.Tensor, int]:
    """``groups`` [N] as contiguous int64 on ``device``, and the number of groups G.

    G defaults to ``groups.max() + 1`` (0 for no rows); an explicit ``num_groups`` (an int >= 0)
    must cover every id; G is at most :data:`MAX_GROUPS` (renumber sparse ids, e.g. with
    ``torch.unique(groups, return_inverse=True)``).
    """
    if num_groups is not None:
        num_groups = check_int(num_groups, "num_groups", 0)
    gids = as_tensor(groups, "groups")
    if gids.dim() != 1 or gids.shape[0] != n:
        raise ValueError(f"groups must be [N] = [{n}], got shape {tuple(gids.shape)}")
    if gids.dtype not in INT_DTYPES:
        raise ValueError(f"groups must be an integer tensor, got {gids.dtype}")
    gids = gids.to(device=device, dtype=torch.int64).contiguous()
    if n and int(gids.min()) < 0:
        raise ValueError(f"groups must be >= 0, got {int(gids.min())}")
    largest = int(gids.max()) + 1 if n else 0
    if num_groups is None:
        num_groups = largest
    elif num_groups < largest:
        raise ValueError(f"num_groups = {num_groups} but groups holds group {largest - 1}")
    if num_groups > MAX_GROUPS:
        raise ValueError(f"groups: {num_groups} groups (num_groups, or the largest id + 1) exceed the limit "
                         f"{MAX_GROUPS}; renumber them, e.g. torch.unique(groups, return_inverse=True)[1]")
    return gids, int(num_groups)


# ----------------------------------------------------------------------------------------------
# the low-level ops' own checks (reference and Triton; the compiled ops check the same in C++):
# what would read or write out of bounds, or make the backends disagree


def check_grid_op(points: torch.Tensor, group_ids: torch.Tensor | None, edges: torch.Tensor,
                  bins: Sequence[int], points_per_group: int) -> None:
    """Arguments of the low-level ``grid_histogram`` / ``grid_cells`` (see
    :mod:`prism_kernels.reference.grid`): shapes, dtypes, and finite non-decreasing edges. Group ids
    outside ``[0, G)`` are allowed: such a point is counted nowhere and its cell is -1."""
    if points.dim() != 2 or not 1 <= points.shape[1] <= 3 or points.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"points must be float32 or float64 [N, D] with D in 1..3, got {describe(points)}")
    dims = points.shape[1]
    if len(bins) != dims:
        raise ValueError(f"bins must have one entry per axis ({dims}), got {list(bins)}")
    if edges.dim() != 3 or edges.dtype != torch.float64 or edges.shape[1] != dims:
        raise ValueError(f"edges must be float64 [G, D, M + 1] with D = {dims}, got {describe(edges)}")
    for d, n in enumerate(bins):
        if not 1 <= int(n) <= edges.shape[2] - 1:
            raise ValueError(f"bins[{d}] = {n} must be in [1, {edges.shape[2] - 1}] (edges hold M + 1 per axis)")
    for d, n in enumerate(bins):
        e = edges[:, d, : int(n) + 1]
        if e.numel() and not (bool(torch.isfinite(e).all()) and bool((e[:, 1:] >= e[:, :-1]).all())):
            raise ValueError(f"edges[:, {d}] must be finite and non-decreasing")
    if group_ids is not None:
        if group_ids.dim() != 1 or group_ids.shape[0] != points.shape[0] or group_ids.dtype != torch.int64:
            raise ValueError(f"group_ids must be int64 [N] = [{points.shape[0]}], got {describe(group_ids)}")
    elif points.shape[0]:
        if points_per_group < 1:
            raise ValueError(f"points_per_group must be >= 1, got {points_per_group}")
        if (points.shape[0] - 1) // points_per_group >= edges.shape[0]:
            raise ValueError(f"{points.shape[0]} points in groups of {points_per_group} need more than the "
                             f"{edges.shape[0]} groups of edges")


def check_window_op(counts: torch.Tensor, window: Sequence[int], stride: Sequence[int]) -> None:
    """Arguments of the low-level ``window_counts``: int64 ``[B, n0, n1, n2]``, 3-entry window and
    stride with ``1 <= w_i <= n_i`` and ``s_i >= 1``."""
    if counts.dim() != 4 or counts.dtype != torch.int64:
        raise ValueError(f"counts must be int64 [B, n0, n1, n2], got {describe(counts)}")
    if len(window) != 3 or len(stride) != 3:
        raise ValueError("window and stride must have 3 entries")
    for a in range(3):
        if not (1 <= window[a] <= counts.shape[a + 1] and stride[a] >= 1):
            raise ValueError(f"window / stride out of range on axis {a}: window {list(window)}, stride "
                             f"{list(stride)}, grid {list(counts.shape[1:])}")


def check_grouped_op(x: torch.Tensor, order: torch.Tensor, offsets: torch.Tensor) -> None:
    """Arguments of the low-level ``grouped_gram`` / ``grouped_frobenius_sq``: ``x [N, d]``,
    ``order`` an int64 [N] of row indices in range, ``offsets`` int64 [G + 1] non-decreasing from 0
    to N."""
    if x.dim() != 2:
        raise ValueError(f"x must be [N, d], got {describe(x)}")
    n = x.shape[0]
    if order.dim() != 1 or order.dtype != torch.int64 or order.shape[0] != n:
        raise ValueError(f"order must be int64 [N] = [{n}], got {describe(order)}")
    if n and (int(order.min()) < 0 or int(order.max()) >= n):
        raise ValueError("order out of range")
    if offsets.dim() != 1 or offsets.dtype != torch.int64 or offsets.shape[0] < 1:
        raise ValueError(f"offsets must be int64 [G + 1], got {describe(offsets)}")
    if int(offsets[0]) != 0 or int(offsets[-1]) != n or bool((offsets[1:] < offsets[:-1]).any()):
        raise ValueError("offsets must be non-decreasing from 0 to N")


def check_gram_op(gram: torch.Tensor, x: torch.Tensor, weights: torch.Tensor | None) -> None:
    """Arguments of the low-level ``gram_accumulate``: ``gram`` float64 contiguous ``[d, d]``, ``x``
    floating ``[n, d]``, ``weights`` finite and >= 0 ``[n]`` (a negative weight would put NaN in the
    Gram)."""
    if x.dim() != 2 or x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"x must be a floating [n, d] tensor, got {describe(x)}")
    d = x.shape[1]
    if gram.shape != (d, d) or gram.dtype != torch.float64 or not gram.is_contiguous():
        raise ValueError(f"gram must be a contiguous float64 [d, d] tensor with d = {d}, got {describe(gram)}")
    if weights is not None:
        if weights.dim() != 1 or weights.shape[0] != x.shape[0]:
            raise ValueError(f"weights must be [n] = [{x.shape[0]}], got {describe(weights)}")
        w = weights.to(torch.float64)
        if w.numel() and not bool((torch.isfinite(w) & (w >= 0)).all()):
            raise ValueError("weights must be finite and >= 0")
