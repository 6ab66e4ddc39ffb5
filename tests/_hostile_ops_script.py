"""Runs hostile direct calls of every ``torch.ops.prism.*`` op in THIS process and prints one JSON
line per case: ``{"case": ..., "outcome": "ok" | "error", "type": ..., "message": ...}``.

Run by tests/test_hostile_ops.py in a subprocess, so that a crash (segfault, SIGBUS, abort) fails
that test instead of killing the test run; the case being run is printed before it starts, so a
crash names it.
"""

from __future__ import annotations

import json
import math
import sys

import torch

import prism_kernels  # noqa: F401  (registers the ops)

P = torch.ops.prism
nan, inf = math.nan, math.inf


def pts(n=8, d=2, dtype=torch.float32):
    return torch.rand(n, d, dtype=dtype)


def edges(g=1, d=2, bins=4):
    e = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    return e.expand(g, d, bins + 1).contiguous()


def gram(d=4):
    return torch.zeros(d, d, dtype=torch.float64)


X = torch.randn(6, 4)
ORDER = torch.arange(6)
OFF = torch.tensor([0, 3, 6])

CASES = {
    # grid_histogram / grid_cells: ids, shapes, edges
    "hist_group_id_huge": lambda: P.grid_histogram(pts(), torch.full((8,), 1 << 40), edges(), [4, 4], 1),
    "hist_group_id_negative": lambda: P.grid_histogram(pts(), torch.full((8,), -5), edges(), [4, 4], 1),
    "hist_group_id_equal_G": lambda: P.grid_histogram(pts(), torch.full((8,), 1), edges(), [4, 4], 1),
    "cells_group_id_huge": lambda: P.grid_cells(pts(), torch.full((8,), 1 << 40), edges(), [4, 4], 1),
    "cells_group_id_negative": lambda: P.grid_cells(pts(), torch.full((8,), -1), edges(), [4, 4], 1),
    "hist_group_ids_short": lambda: P.grid_histogram(pts(), torch.zeros(3, dtype=torch.long), edges(), [4, 4], 1),
    "hist_group_ids_int32": lambda: P.grid_histogram(pts(), torch.zeros(8, dtype=torch.int32), edges(), [4, 4], 1),
    "hist_group_ids_noncontig": lambda: P.grid_histogram(pts(), torch.zeros(16, dtype=torch.long)[::2], edges(),
                                                         [4, 4], 1),
    "hist_points_noncontig": lambda: P.grid_histogram(pts(8, 4)[:, ::2], None, edges(), [4, 4], 8),
    "hist_points_1d": lambda: P.grid_histogram(torch.rand(8), None, edges(), [4, 4], 8),
    "hist_points_d4": lambda: P.grid_histogram(pts(8, 4), None, edges(1, 4), [4, 4, 4, 4], 8),
    "hist_points_half": lambda: P.grid_histogram(pts(dtype=torch.float16), None, edges(), [4, 4], 8),
    "hist_points_int": lambda: P.grid_histogram(torch.ones(8, 2, dtype=torch.long), None, edges(), [4, 4], 8),
    "hist_bins_beyond_edges": lambda: P.grid_histogram(pts(), None, edges(bins=4), [4, 100], 8),
    "hist_bins_zero": lambda: P.grid_histogram(pts(), None, edges(), [0, 4], 8),
    "hist_bins_negative": lambda: P.grid_histogram(pts(), None, edges(), [-3, 4], 8),
    "hist_bins_short": lambda: P.grid_histogram(pts(), None, edges(), [4], 8),
    "hist_edges_float32": lambda: P.grid_histogram(pts(), None, edges().float(), [4, 4], 8),
    "hist_edges_2d": lambda: P.grid_histogram(pts(), None, edges()[0], [4, 4], 8),
    "hist_edges_wrong_d": lambda: P.grid_histogram(pts(), None, edges(1, 3), [4, 4], 8),
    "hist_edges_noncontig": lambda: P.grid_histogram(pts(), None, edges(1, 2, 8)[:, :, ::2], [4, 4], 8),
    "hist_edges_nan": lambda: P.grid_histogram(pts(), None, edges().index_fill_(2, torch.tensor([2]), nan),
                                               [4, 4], 8),
    "hist_edges_all_nan": lambda: P.grid_histogram(pts(), None, torch.full((1, 2, 5), nan, dtype=torch.float64),
                                                   [4, 4], 8),
    "hist_edges_inf": lambda: P.grid_histogram(pts(), None, edges().index_fill_(2, torch.tensor([4]), inf),
                                               [4, 4], 8),
    "hist_edges_decreasing": lambda: P.grid_histogram(pts(), None, edges().flip(2).contiguous(), [4, 4], 8),
    "hist_edges_no_groups": lambda: P.grid_histogram(pts(), None, edges(0), [4, 4], 8),
    "hist_ppg_zero": lambda: P.grid_histogram(pts(), None, edges(), [4, 4], 0),
    "hist_ppg_negative": lambda: P.grid_histogram(pts(), None, edges(), [4, 4], -4),
    "hist_ppg_too_small": lambda: P.grid_histogram(pts(), None, edges(), [4, 4], 1),
    "hist_ppg_huge": lambda: P.grid_histogram(pts(), None, edges(), [4, 4], 1 << 62),
    "hist_cells_overflow": lambda: P.grid_histogram(pts(), None, torch.zeros(1, 2, 3, dtype=torch.float64),
                                                    [1 << 40, 1 << 40], 8),
    "cells_bins_beyond_edges": lambda: P.grid_cells(pts(), None, edges(bins=4), [4, 100], 8),
    "cells_edges_nan": lambda: P.grid_cells(pts(), None, torch.full((1, 2, 5), nan, dtype=torch.float64), [4, 4], 8),
    "cells_ppg_zero": lambda: P.grid_cells(pts(), None, edges(), [4, 4], 0),
    "cells_points_noncontig": lambda: P.grid_cells(pts(8, 4)[:, ::2], None, edges(), [4, 4], 8),
    # window_counts
    "window_too_large": lambda: P.window_counts(torch.ones(1, 4, 4, 4, dtype=torch.long), [5, 1, 1], [1, 1, 1]),
    "window_zero": lambda: P.window_counts(torch.ones(1, 4, 4, 4, dtype=torch.long), [0, 1, 1], [1, 1, 1]),
    "window_negative": lambda: P.window_counts(torch.ones(1, 4, 4, 4, dtype=torch.long), [-1, 1, 1], [1, 1, 1]),
    "window_stride_zero": lambda: P.window_counts(torch.ones(1, 4, 4, 4, dtype=torch.long), [1, 1, 1], [0, 1, 1]),
    "window_short": lambda: P.window_counts(torch.ones(1, 4, 4, 4, dtype=torch.long), [1, 1], [1, 1]),
    "window_counts_3d": lambda: P.window_counts(torch.ones(4, 4, 4, dtype=torch.long), [1, 1, 1], [1, 1, 1]),
    "window_counts_int32": lambda: P.window_counts(torch.ones(1, 4, 4, 4, dtype=torch.int32), [1, 1, 1], [1, 1, 1]),
    "window_counts_noncontig": lambda: P.window_counts(torch.ones(1, 4, 4, 8, dtype=torch.long)[..., ::2],
                                                       [1, 1, 1], [1, 1, 1]),
    "window_counts_empty": lambda: P.window_counts(torch.ones(0, 4, 4, 4, dtype=torch.long), [1, 1, 1], [1, 1, 1]),
    # gram_accumulate
    "gram_wrong_shape": lambda: P.gram_accumulate(gram(3), X, None, True, False),
    "gram_float32": lambda: P.gram_accumulate(gram().float(), X, None, True, False),
    "gram_noncontig": lambda: P.gram_accumulate(torch.zeros(4, 8, dtype=torch.float64)[:, ::2], X, None, True, False),
    "gram_x_1d": lambda: P.gram_accumulate(gram(), torch.randn(4), None, True, False),
    "gram_x_int": lambda: P.gram_accumulate(gram(), torch.ones(6, 4, dtype=torch.long), None, True, False),
    "gram_x_broadcast_rows": lambda: P.gram_accumulate(gram(), torch.randn(1, 4).expand(6, 4), None, True, False),
    "gram_x_transposed": lambda: P.gram_accumulate(gram(), torch.randn(4, 6).T, None, True, True),
    "gram_weights_short": lambda: P.gram_accumulate(gram(), X, torch.ones(2, dtype=torch.float64), True, False),
    "gram_weights_2d": lambda: P.gram_accumulate(gram(), X, torch.ones(6, 1, dtype=torch.float64), True, False),
    "gram_weights_negative": lambda: P.gram_accumulate(gram(), X, -torch.ones(6, dtype=torch.float64), True, False),
    "gram_weights_nan": lambda: P.gram_accumulate(gram(), X, torch.full((6,), nan, dtype=torch.float64), True, False),
    "gram_x_huge_f64": lambda: P.gram_accumulate(gram(), torch.full((6, 4), 1e300, dtype=torch.float64), None,
                                                 False, True),
    # grouped_gram / grouped_frobenius_sq
    "grouped_order_out_of_range": lambda: P.grouped_gram(X, torch.full((6,), 99), OFF, 3, True),
    "grouped_order_negative": lambda: P.grouped_gram(X, torch.full((6,), -1), OFF, 3, True),
    "grouped_order_short": lambda: P.grouped_gram(X, torch.arange(2), OFF, 3, True),
    "grouped_order_int32": lambda: P.grouped_gram(X, ORDER.int(), OFF, 3, True),
    "grouped_offsets_decreasing": lambda: P.grouped_gram(X, ORDER, torch.tensor([0, 5, 2, 6]), 4, True),
    "grouped_offsets_not_zero": lambda: P.grouped_gram(X, ORDER, torch.tensor([1, 6]), 4, True),
    "grouped_offsets_beyond": lambda: P.grouped_gram(X, ORDER, torch.tensor([0, 60]), 4, True),
    "grouped_offsets_empty": lambda: P.grouped_gram(X, ORDER, torch.zeros(0, dtype=torch.long), 4, True),
    "grouped_offsets_2d": lambda: P.grouped_gram(X, ORDER, OFF[None], 4, True),
    "grouped_size_zero": lambda: P.grouped_gram(X, ORDER, OFF, 0, True),
    "grouped_size_small": lambda: P.grouped_gram(X, ORDER, OFF, 1, True),
    "grouped_size_huge": lambda: P.grouped_gram(X, ORDER, OFF, 1 << 40, True),
    "grouped_x_1d": lambda: P.grouped_gram(torch.randn(6), ORDER, OFF, 3, True),
    "grouped_x_int": lambda: P.grouped_gram(torch.ones(6, 4, dtype=torch.long), ORDER, OFF, 3, True),
    "frob_order_out_of_range": lambda: P.grouped_frobenius_sq(X, torch.full((6,), 99), OFF, True),
    "frob_offsets_decreasing": lambda: P.grouped_frobenius_sq(X, ORDER, torch.tensor([0, 5, 2, 6]), True),
    "frob_offsets_empty": lambda: P.grouped_frobenius_sq(X, ORDER, torch.zeros(0, dtype=torch.long), True),
    # rbf_matvec
    "rbf_v_short": lambda: P.rbf_matvec(X.double(), torch.ones(2, 1, dtype=torch.float64), 1.0),
    "rbf_x_float32": lambda: P.rbf_matvec(X, torch.ones(6, 1, dtype=torch.float64), 1.0),
    "rbf_gamma_nan": lambda: P.rbf_matvec(X.double(), torch.ones(6, 1, dtype=torch.float64), nan),
    "rbf_gamma_negative": lambda: P.rbf_matvec(X.double(), torch.ones(6, 1, dtype=torch.float64), -1.0),
    "rbf_x_1d": lambda: P.rbf_matvec(torch.randn(6, dtype=torch.float64), torch.ones(6, 1, dtype=torch.float64), 1.0),
    # sketch
    "sketch_k_zero": lambda: P.sketch(X, 0, "rademacher", 0, 0, 0, 4, 1.0),
    "sketch_k_huge": lambda: P.sketch(X, 1 << 40, "rademacher", 0, 0, 0, 4, 1.0),
    "sketch_kind_bad": lambda: P.sketch(X, 4, "nope", 0, 0, 0, 4, 1.0),
    "sketch_block_negative": lambda: P.sketch(X, 4, "rademacher", 0, -1, 0, 4, 1.0),
    "sketch_offset_negative": lambda: P.sketch(X, 4, "rademacher", 0, 0, -1, 4, 1.0),
    "sketch_offset_overflow": lambda: P.sketch(X, 4, "rademacher", 0, 0, (1 << 63) - 2, 4, 1.0),
    "sketch_s_zero": lambda: P.sketch(X, 4, "sparse", 0, 0, 0, 0, 1.0),
    "sketch_s_huge": lambda: P.sketch(X, 4, "sparse", 0, 0, 0, 1 << 40, 1.0),
    "sketch_rows_1d": lambda: P.sketch(torch.randn(6), 4, "rademacher", 0, 0, 0, 4, 1.0),
    "sketch_rows_f64": lambda: P.sketch(X.double(), 4, "rademacher", 0, 0, 0, 4, 1.0),
    "sketch_rows_noncontig": lambda: P.sketch(torch.randn(6, 8)[:, ::2], 4, "rademacher", 0, 0, 0, 4, 1.0),
    "sketch_rows_empty": lambda: P.sketch(torch.randn(0, 4), 4, "rademacher", 0, 0, 0, 4, 1.0),
}


def main(names) -> None:
    for name in names or CASES:
        print(json.dumps({"case": name, "outcome": "start"}), flush=True)
        try:
            CASES[name]()
        except Exception as exc:  # noqa: BLE001 - the outcome is what is reported
            out = {"case": name, "outcome": "error", "type": type(exc).__name__,
                   "message": str(exc).splitlines()[0] if str(exc) else ""}
        else:
            out = {"case": name, "outcome": "ok"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
