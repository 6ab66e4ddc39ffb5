"""The one timing harness of the benchmarks (DESIGN §3): interleaved calls, per-call wall time
(time.perf_counter), reported as the median with the 20th / 80th percentiles.

Used by report.py (grid), bench_vendi.py and sketch_report.py. ``settle_s`` pauses before every
timed call: OpenBLAS's worker threads (numpy) keep spinning for up to ~0.1 s after a call returns and
would take a core from whatever runs next.

Reports share benchmarks/RESULTS.md: each owns a section between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` and replaces only that with :func:`write_section`.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np


def measure(fns: dict, rounds: int, budget_s: float = float("inf"), min_repeats: int = 3,
            settle_s: float = 0.0, warmup: bool = True) -> dict[str, np.ndarray]:
    """Per-call seconds of every function, interleaved: warm-up, then `rounds` rounds in a rotating
    order. An implementation whose warm-up call says it would exceed budget_s over all rounds runs
    in only max(min_repeats, budget_s / t_warmup) rounds, spread evenly. ``warmup=False`` (for calls
    of minutes that the caller warms up more cheaply itself) skips the warm-up calls; every
    implementation then runs all rounds (no budget)."""
    if not warmup and budget_s != float("inf"):
        raise ValueError("measure: a budget needs the warm-up call's time (warmup=True)")
    names = list(fns)
    repeats = {}
    for name in names:
        if not warmup:
            repeats[name] = rounds
            continue
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


def fmt_s(t: np.ndarray) -> str:
    """Median [p20–p80] of per-call seconds, in seconds (for calls of seconds or more)."""
    p20, med, p80 = np.percentile(t, [20, 50, 80])
    return f"{med:.2f} [{p20:.2f}–{p80:.2f}]"


def median_s(t: np.ndarray) -> float:
    """The median of per-call seconds."""
    return float(np.median(t))


class Timing(float):
    """Per-call seconds ``t`` as their median, a float (ratios of Timings are plain floats), that
    formats with its 20th-80th percentiles: ``f"{x:.3f} s"`` gives ``"0.123 [0.120–0.130] s"``."""

    def __new__(cls, t):
        self = super().__new__(cls, median_s(t))
        self.t = np.asarray(t, dtype=float)
        return self

    def __format__(self, spec: str) -> str:
        p20, p80 = np.percentile(self.t, [20, 80])
        return f"{float(self):{spec}} [{p20:{spec}}–{p80:{spec}}]"


def write_section(path: str | Path, marker: str, text: str) -> None:
    """Puts ``text`` in the section of the markdown file ``path`` delimited by the lines
    ``<!-- {marker}:begin -->`` and ``<!-- {marker}:end -->``, replacing what was there and keeping the
    rest of the file (other reports' sections). Without such a section, the marked section is appended
    at the end (the file is created if missing). E.g. ``write_section("benchmarks/RESULTS.md",
    "grid-report", markdown)``."""
    path = Path(path)
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    section = begin + "\n" + text.strip("\n") + "\n" + end + "\n"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old[old.index(begin):]:
        stop = old.index(end, old.index(begin)) + len(end)
        new = old[: old.index(begin)] + section + old[stop:].removeprefix("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + section if old.strip() else section
    path.write_text(new)
