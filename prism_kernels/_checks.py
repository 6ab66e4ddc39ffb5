"""Argument conversion shared by the public wrappers: tensors in, clear errors naming the argument."""

from __future__ import annotations

import numpy as np
import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def as_tensor(value, name: str) -> torch.Tensor:
    """``value`` as a tensor: tensors pass through, numpy arrays are wrapped, the rest converted."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    try:
        return torch.as_tensor(value)
    except Exception as exc:  # noqa: BLE001 - re-raised with the argument's name
        raise TypeError(f"{name} must be a torch tensor or numpy array, got {type(value).__name__}") from exc


def describe(value) -> str:
    """``dtype [shape]`` of a tensor, else the type's name: what an error message says was passed."""
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} {list(value.shape)}"
    return type(value).__name__


def check_groups(groups, n: int, device: torch.device, num_groups: int | None) -> tuple[torch.Tensor, int]:
    """``groups`` [N] as contiguous int64 on ``device``, and the number of groups G.

    G defaults to ``groups.max() + 1`` (0 for no rows); an explicit ``num_groups`` must cover every id.
    """
    gids = as_tensor(groups, "groups")
    if gids.dim() != 1 or gids.shape[0] != n:
        raise ValueError(f"groups must be [N] = [{n}], got shape {tuple(gids.shape)}")
    if gids.dtype not in INT_DTYPES:
        raise ValueError(f"groups must be an integer tensor, got {gids.dtype}")
    gids = gids.to(device=device, dtype=torch.int64).contiguous()
    if n and int(gids.min()) < 0:
        raise ValueError("groups must be >= 0")
    largest = int(gids.max()) + 1 if n else 0
    if num_groups is None:
        num_groups = largest
    elif num_groups < largest:
        raise ValueError(f"num_groups = {num_groups} but groups holds group {largest - 1}")
    return gids, int(num_groups)
