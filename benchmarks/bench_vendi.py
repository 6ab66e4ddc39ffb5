"""Vendi benchmarks: prism_kernels vs vendi-score's score_dual and numpy X^T X + eigvalsh.

Every number is reported as a ratio against a named peer measured in the same run on the same data
(best of --repeat runs), with peak resident memory growth. Usage:

    python benchmarks/bench_vendi.py [--rows 100000] [--dim 1024] [--stream-rows 1000000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np
import scipy.linalg
import torch

import prism_kernels as pk


def best(fn, repeat):
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--stream-rows", type=int, default=1_000_000)
    ap.add_argument("--block", type=int, default=50_000)
    ap.add_argument("--groups", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"torch {torch.__version__}, numpy {np.__version__}")
    # streamed 1M rows in "fast": peak memory beyond one input block
    d = a.dim
    if a.stream_rows:  # first, so the RSS peak is not set by the sections below
        g = torch.Generator().manual_seed(1)
        block = torch.randn(a.block, d, generator=g)
        base = peak_mb()
        st = pk.VendiState(d, precision="fast")
        t0 = time.perf_counter()
        for _ in range(0, a.stream_rows, a.block):
            st.update(block)  # same data each block: measures the kernel, not the generator
        t_stream = time.perf_counter() - t0
        st.score(1)
        print(f"stream {a.stream_rows}x{d} fp32 fast in blocks of {a.block}: {t_stream:.2f} s "
              f"(target <= 10 s), peak RSS growth beyond the {block.numel() * 4 / 2**20:.0f} MB block: "
              f"{peak_mb() - base:.0f} MB")

    from vendi_score import vendi
    rng = np.random.default_rng(0)
    n, d = a.rows, a.dim
    if not n:
        return
    x32 = rng.standard_normal((n, d), dtype=np.float32)
    xn32 = x32 / np.linalg.norm(x32, axis=1, keepdims=True)
    t32 = torch.from_numpy(x32)

    # accumulation alone: fast vs numpy fp32 SYRK (numpy's X.T @ X), exact vs numpy fp64 SYRK
    t_np32, _ = best(lambda: xn32.T @ xn32, a.repeat)
    t_fast, _ = best(lambda: pk.VendiState(d, precision="fast").update(t32), a.repeat)
    print(f"accumulate {n}x{d} fp32: numpy X^T X {t_np32:.3f} s | pk fast {t_fast:.3f} s "
          f"(incl. normalisation) -> rate ratio {t_np32 / t_fast:.2f}x")
    x64 = xn32.astype(np.float64)
    t_np64, _ = best(lambda: x64.T @ x64, a.repeat)
    t64 = torch.from_numpy(x64)
    t_exact, _ = best(lambda: pk.VendiState(d, precision="exact").update(t64), a.repeat)
    print(f"accumulate {n}x{d} fp64: numpy X^T X {t_np64:.3f} s | pk exact {t_exact:.3f} s "
          f"-> rate ratio {t_np64 / t_exact:.2f}x")
    del x64, t64

    # full G-Vendi: vs vendi-score score_dual and numpy XtX + eigvalsh
    t_vs, s_vs = best(lambda: vendi.score_dual(x32, q=1), 1)
    t_npe, _ = best(lambda: np.exp(-sum(p * np.log(p) for p in scipy.linalg.eigvalsh(xn32.T @ xn32 / n)
                                          if p > 0)), 1)
    t_pk, s_pk = best(lambda: pk.vendi_score(t32, 1, precision="fast"), a.repeat)
    print(f"G-Vendi {n}x{d}: vendi-score score_dual {t_vs:.3f} s | numpy XtX+eigvalsh {t_npe:.3f} s | "
          f"pk fast {t_pk:.3f} s -> {t_vs / t_pk:.2f}x vs vendi-score, {t_npe / t_pk:.2f}x vs numpy; "
          f"scores {s_vs:.6f} / {s_pk:.6f}")
    del x32, xn32, t32

    # grouped: G groups x 100 rows x d = 64 vs a Python loop over vendi-score
    if a.groups:
        from vendi_score import vendi
        gx = torch.randn(a.groups * 100, 64, dtype=torch.float64)
        gid = torch.arange(a.groups).repeat_interleave(100)
        xs = gx.numpy()
        sub = min(a.groups, 1000)
        for q in (1, 2):
            t_loop, _ = best(lambda: [vendi.score_dual(xs[i * 100:(i + 1) * 100], q=q) for i in range(sub)], 1)
            t_loop *= a.groups / sub
            t_grp, _ = best(lambda: pk.grouped_vendi(gx, gid, q), a.repeat)
            print(f"grouped_vendi {a.groups} groups x 100 x 64, q={q}: vendi-score loop {t_loop:.2f} s "
                  f"(extrapolated from {sub}) | pk {t_grp:.3f} s -> {t_loop / t_grp:.1f}x")


if __name__ == "__main__":
    main()
