"""Pure-torch references of every op: the test oracle and the fallback backend."""

from .grid import grid_cells, grid_histogram, window_counts
from .sketch import sketch

__all__ = ["grid_cells", "grid_histogram", "sketch", "window_counts"]
