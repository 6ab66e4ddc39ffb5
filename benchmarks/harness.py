"""The one timing harness of the benchmarks (DESIGN §3): interleaved calls, per-call wall time
(time.perf_counter), reported as the median with the 20th / 80th percentiles.

Used by report.py (grid), bench_vendi.py and sketch_report.py. ``settle_s`` pauses before every
timed call: OpenBLAS's worker threads (numpy) keep spinning for up to ~0.1 s after a call returns and
would take a core from whatever runs next.
"""

from __future__ import annotations

import gc
import time

import numpy as np


def measure(fns: dict, rounds: int, budget_s: float = float("inf"), min_repeats: int = 3,
            settle_s: float = 0.0) -> dict[str, np.ndarray]:
    """Per-call seconds of every function, interleaved: warm-up, then `rounds` rounds in a rotating
    order. An implementation whose warm-up call says it would exceed budget_s over all rounds runs
    in only max(min_repeats, budget_s / t_warmup) rounds, spread evenly."""
    names = list(fns)
    repeats = {}
    for name in names:
        t0 = time.perf_counter()
        fns[name]()
        warm = time.perf_counter() - t0
        repeats[name] = rounds if warm * rounds <= budget_s else max(min_repeats, min(rounds, int(budget_s / warm)))
    times = {name: [] for name in names}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                k = repeats[name]
                if (r + 1) * k // rounds == r * k // rounds:  # not this round (evenly spread)
                    continue
                if settle_s:
                    time.sleep(settle_s)
                t0 = time.perf_counter()
                fns[name]()
                times[name].append(time.perf_counter() - t0)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: np.asarray(t) for name, t in times.items()}


def stats_ms(t: np.ndarray) -> tuple[float, float, float]:
    p20, med, p80 = np.percentile(t * 1e3, [20, 50, 80])
    return float(med), float(p20), float(p80)


def fmt_ms(t: np.ndarray) -> str:
    med, p20, p80 = stats_ms(t)
    digits = 2 if med < 10 else 1 if med < 1000 else 0
    return f"{med:.{digits}f} [{p20:.{digits}f}–{p80:.{digits}f}]"




def median_s(t: np.ndarray) -> float:
    """The median of per-call seconds."""
    return float(np.median(t))
