"""Pure-torch references of every op: the test oracle and the fallback backend."""

from .grid import grid_cells, grid_histogram, window_counts
from .kernel_vendi import rbf_matvec
from .sketch import sketch
from .vendi import gram_accumulate, grouped_frobenius_sq, grouped_gram

__all__ = ["grid_cells", "grid_histogram", "gram_accumulate", "grouped_frobenius_sq", "grouped_gram", "rbf_matvec",
           "sketch", "window_counts"]
