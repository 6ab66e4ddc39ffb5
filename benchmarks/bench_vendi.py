"""Vendi benchmarks: prism_kernels vs vendi-score's score_dual, numpy X^T X + eigvalsh, and scipy's
exact kernel-matrix eigenvalues for kernel_vendi.

Every number is reported as a ratio against a named peer measured in the same run on the same data;
peer and prism_kernels runs are interleaved and the medians of --repeat runs are compared; times are
printed as median [p20–p80] (benchmarks/harness.py; the machine is shared: the load average is
printed at the start and the end). Usage:

    python benchmarks/bench_vendi.py [--rows 100000] [--dim 1024] [--stream-rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import scipy.spatial.distance
import torch

import prism_kernels as pk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Timing, measure  # noqa: E402  (the one timing harness)


# Pause before every timed call. OpenBLAS's worker threads (numpy) keep spinning for up to 2^28
# cycles (~0.1 s) after a call returns, and would take a core from whatever runs next; OpenMP's
# workers (torch, prism_kernels) spin briefly too. Measured here: without the pause, the call after
# numpy's ran ~10% slower than the same call after a pause.
SETTLE_S = 0.3


def _last_output(fn, box):
    def call():
        box[0] = fn()
    return call


def best(fn, repeat):
    """Time of ``repeat`` calls of ``fn`` (a harness.Timing: the median, printed with p20-p80), and its
    last output."""
    box = [None]
    t = measure({"f": _last_output(fn, box)}, repeat, settle_s=SETTLE_S)["f"]
    return Timing(t), box[0]


def paired(peer, ours, repeat):
    """Times (harness.Timing) of ``peer`` and ``ours`` run interleaved ``repeat`` times (harness.measure,
    each call after a pause of SETTLE_S); and their last outputs."""
    bp, bo = [None], [None]
    t = measure({"peer": _last_output(peer, bp), "ours": _last_output(ours, bo)}, repeat, settle_s=SETTLE_S)
    return Timing(t["peer"]), Timing(t["ours"]), bp[0], bo[0]


def load():
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--stream-rows", type=int, default=1_000_000)
    ap.add_argument("--block", type=int, default=50_000)
    ap.add_argument("--groups", type=int, default=10_000)
    ap.add_argument("--kernel-rows", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"torch {torch.__version__}, numpy {np.__version__}; {load()}")
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
    t_np32, t_fast, _, _ = paired(lambda: xn32.T @ xn32, lambda: pk.VendiState(d, precision="fast").update(t32),
                                  a.repeat)
    print(f"accumulate {n}x{d} fp32: numpy X^T X {t_np32:.3f} s | pk fast {t_fast:.3f} s "
          f"(incl. normalisation) -> rate ratio {t_np32 / t_fast:.2f}x (medians of {a.repeat}, interleaved)")
    x64 = xn32.astype(np.float64)
    t64 = torch.from_numpy(x64)
    t_np64, t_exact, _, _ = paired(lambda: x64.T @ x64, lambda: pk.VendiState(d, precision="exact").update(t64),
                                   a.repeat)
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
            t_loop, t_grp, _, _ = paired(
                lambda: [vendi.score_dual(xs[i * 100:(i + 1) * 100], q=q) for i in range(sub)],
                lambda: pk.grouped_vendi(gx, gid, q), a.repeat)
            t_loop *= a.groups / sub
            print(f"grouped_vendi {a.groups} groups x 100 x 64, q={q}: vendi-score loop {t_loop:.2f} s "
                  f"(extrapolated from {sub}) | pk {t_grp:.3f} s -> {t_loop / t_grp:.1f}x")

    # kernel_vendi: RBF on n clustered rows in d = 8, exact / SLQ / RFF vs scipy's exact eigenvalues
    if a.kernel_rows:
        g = torch.Generator().manual_seed(0)
        kn, bw = a.kernel_rows, 3.0
        centres = torch.randn(20, 8, generator=g) * 2
        kx = centres[torch.randint(0, 20, (kn,), generator=g)] + 0.5 * torch.randn(kn, 8, generator=g)
        kxn = kx.double().numpy()

        def scipy_exact():
            k = np.exp(-scipy.spatial.distance.cdist(kxn, kxn, "sqeuclidean") / (2 * bw * bw))
            lam = scipy.linalg.eigvalsh(k / kn)
            lam = lam[lam > 0]
            return float(np.exp(-(lam * np.log(lam)).sum()))

        t = time.perf_counter()
        s_peer = scipy_exact()
        t_peer = time.perf_counter() - t
        print(f"kernel_vendi rbf n={kn} d=8 bandwidth={bw}: scipy cdist+exp+eigvalsh {t_peer:.2f} s, "
              f"score {s_peer:.4f}")
        for method in ("exact", "slq", "rff"):
            t = time.perf_counter()
            r = pk.kernel_vendi(kx, bandwidth=bw, method=method, seed=1)
            t_pk = time.perf_counter() - t
            print(f"  pk {method:5s} {t_pk:.2f} s -> {t_peer / t_pk:.2f}x; score {r.score:.4f} +- {r.stderr:.4f} "
                  f"(relative error {abs(r.score - s_peer) / s_peer:.2e}"
                  + (f", {abs(r.score - s_peer) / r.stderr:.2f} stderr)" if r.stderr > 0 else ")"))
    print(f"end: {load()}")

if __name__ == "__main__":
    main()
