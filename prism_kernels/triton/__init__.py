"""Triton backend of the grid-density, Vendi and sketch kernels.

Importing this package does not import Triton; import the per-op modules lazily:
``prism_kernels.triton.grid_histogram``, ``prism_kernels.triton.grid_cells``,
``prism_kernels.triton.window_counts``, ``prism_kernels.triton.gram_accumulate``,
``prism_kernels.triton.grouped_gram``, ``prism_kernels.triton.grouped_frobenius_sq``,
``prism_kernels.triton.rbf_matvec`` and ``prism_kernels.triton.sketch``. Each exposes its launcher
under the op's name, with the reference's signature (see :mod:`prism_kernels.reference`).
"""

__all__ = ["grid_histogram", "grid_cells", "window_counts", "gram_accumulate", "grouped_gram",
           "grouped_frobenius_sq", "rbf_matvec", "sketch"]
