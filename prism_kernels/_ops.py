"""Fake (meta) implementations of the compiled ops, so they trace under torch.compile.

The ops themselves are defined and registered in C++ (csrc/ops/registration.cpp). The grid ops
return integer tensors only; the Vendi ops are not differentiable either. ``prism::sketch`` returns float32 but is declared non-differentiable:
its autograd kernel refuses a backward pass with a clear error (sketches are taken of gradients
that are already computed, never differentiated through).
"""

from __future__ import annotations

import math

import torch

from ._backends import compiled

if compiled() is not None:

    @torch.library.register_fake("prism::grid_histogram")
    def _grid_histogram_fake(points, group_ids, edges, bins, points_per_group):
        groups = edges.shape[0]
        cells = math.prod(bins)
        return (points.new_empty((groups, cells), dtype=torch.int64),
                points.new_empty((groups,), dtype=torch.int64))

    @torch.library.register_fake("prism::grid_cells")
    def _grid_cells_fake(points, group_ids, edges, bins, points_per_group):
        return points.new_empty((points.shape[0],), dtype=torch.int64)

    @torch.library.register_fake("prism::window_counts")
    def _window_counts_fake(counts, window, stride):
        out = [(n - w) // s + 1 for n, w, s in zip(counts.shape[1:], window, stride)]
        return counts.new_empty((counts.shape[0], *out), dtype=torch.int64)

    @torch.library.register_fake("prism::gram_accumulate")
    def _gram_accumulate_fake(gram, x, weights, normalize, exact):
        return x.new_empty((2,), dtype=torch.int64)

    @torch.library.register_fake("prism::grouped_gram")
    def _grouped_gram_fake(x, order, offsets, size, normalize):
        return x.new_empty((offsets.shape[0] - 1, size, size), dtype=torch.float64)

    @torch.library.register_fake("prism::rbf_matvec")
    def _rbf_matvec_fake(x, v, gamma):
        return v.new_empty((x.shape[0], v.shape[1]), dtype=torch.float64)

    @torch.library.register_fake("prism::grouped_frobenius_sq")
    def _grouped_frobenius_sq_fake(x, order, offsets, normalize):
        return x.new_empty((offsets.shape[0] - 1,), dtype=torch.float64)

    @torch.library.register_fake("prism::sketch")
    def _sketch_fake(rows, k, kind, seed, block, offset, s, scale):
        return rows.new_empty((rows.shape[0], k), dtype=torch.float32)

    def _sketch_setup_context(ctx, inputs, output):
        pass

    def _sketch_backward(ctx, grad):
        raise RuntimeError("prism::sketch is not differentiable: sketch detached tensors "
                           "(prism_kernels.sketch detaches its input)")

    torch.library.register_autograd("prism::sketch", _sketch_backward, setup_context=_sketch_setup_context)
