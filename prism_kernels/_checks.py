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
