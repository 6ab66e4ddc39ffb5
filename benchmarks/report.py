"""Times the grid-density kernels against their peers and prints a markdown report.

    python benchmarks/report.py                                   # full run (1M and 10M points)
    python benchmarks/report.py --quick                           # 1M points only, fewer repeats
    python benchmarks/report.py --out benchmarks/RESULTS.md       # also write the markdown there
    python benchmarks/report.py --seed-pairs --out benchmarks/RESULTS.md   # only seed_pairs (own section)

Each case: one warm-up call per implementation, then rounds in which ours and every peer run once
each, in an order that rotates from round to round (interleaved, so a burst of load from other
processes hits all of them alike). A slow peer runs in fewer, evenly spread rounds (at least 3).
Reported: the median and the 20th/80th percentiles of the per-call wall time (time.perf_counter),
and the ratio peer median / our median (> 1: we are faster). Before timing, ours is checked
against numpy.histogramdd (exact counts) and scipy.ndimage.uniform_filter (window sums).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import fast_histogram
import numpy as np
import scipy
import torch

import prism_kernels as pk

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grid_cases as gcases  # noqa: E402
from harness import fmt_ms, measure, stats_ms, write_section  # noqa: E402,F401  (the one timing harness)

REPO = Path(__file__).resolve().parent.parent
REPRODUCE = "python benchmarks/report.py --out benchmarks/RESULTS.md"

# Targets (ours = pk.grid_histogram, backend="cpu").
TARGET_2D_MS = 15.0  # 10M 2-D points into 256^2
TARGET_2D_VS_FH = 4.0
TARGET_3D_VS_FH = 3.0  # 3-D, both 64^3 and 256^3

BUSY_WARNING = 0.15  # others' share of the CPU above which the report warns that it is noisy
ONE_THREAD = "ours-1t"  # ours with torch.set_num_threads(1): shown for reference, not in the ratios


# ----------------------------------------------------------------------------------------------
# machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "--no-optional-locks", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "--no-optional-locks", "diff", "--quiet", "HEAD", "--",
                                "prism_kernels", "csrc", "setup.py"], cwd=REPO, check=False).returncode
        return rev + (" + uncommitted changes in prism_kernels/, csrc/ or setup.py" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine_lines() -> list[str]:
    info = pk.build_info()
    caps = info.get("capabilities", {})
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    so = getattr(pk._backends.compiled(), "__file__", None)
    built = (datetime.datetime.fromtimestamp(os.path.getmtime(so)).astimezone().isoformat(timespec="seconds")
             if so else "not built")
    return [
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- CPU: {cpu_model()}, {cores} logical cores ({usable} usable by this process)",
        f"- torch.get_num_threads(): {torch.get_num_threads()} (ours and torch.histogramdd use them; "
        f"numpy.histogramdd, fast-histogram and scipy run on one thread)",
        f"- python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"fast-histogram {fast_histogram.__version__}, scipy {scipy.__version__}",
        f"- prism_kernels {info.get('version')} (git {git_revision()}), compiler "
        f"{info.get('compiler', '?')}, AVX2 {'on' if caps.get('avx2') and caps.get('simd_enabled') else 'off'} "
        f"(CPU has AVX2: {caps.get('avx2')}, SIMD path enabled: {caps.get('simd_enabled')}); "
        f"extension file dated {built}",
    ]


class CpuMonitor:
    """Share of the machine's CPU time used by other processes over an interval (/proc/stat minus
    this process's own CPU time): a measure of how noisy the timings were."""

    def __init__(self):
        self.ncpu = os.cpu_count() or 1
        self.start()

    @staticmethod
    def _busy_s() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        v = [int(x) for x in fields]
        busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)  # incl. steal
        return busy / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> float:
        t = os.times()
        return t.user + t.system

    def start(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy_s(), self._own_s()

    def others(self) -> float | None:
        busy = self._busy_s()
        if busy is None or self.busy0 is None:
            return None
        elapsed = time.perf_counter() - self.t0
        other = (busy - self.busy0) - (self._own_s() - self.own0)
        return max(0.0, other) / (elapsed * self.ncpu) if elapsed > 0 else None


# ----------------------------------------------------------------------------------------------
# timing


def fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


# ----------------------------------------------------------------------------------------------
# checks


def check_counts(data: gcases.Data) -> list[str]:
    """Ours must give numpy.histogramdd's counts exactly (so a wrong fast result is never reported)."""
    lines = []
    for dims, bins in ((2, 256), (3, 64)):
        case = gcases.HistCase("1M", dims, bins)
        ours = gcases.hist_fn(case, "ours", data)().numpy()
        ref = gcases.hist_fn(case, "numpy", data)().astype(np.int64)
        assert ours.dtype == np.int64 and ours.shape == ref.shape, (ours.dtype, ours.shape, ref.shape)
        assert np.array_equal(ours, ref), f"grid_histogram counts differ from numpy.histogramdd on {case.id}"
        for peer in ("torch", "fast-histogram"):
            got = gcases.total(gcases.hist_fn(case, peer, data)())
            assert got == case.n, f"{peer} counted {got} of {case.n} points on {case.id}"
        lines.append(f"{case.id}: ours == numpy.histogramdd exactly ({case.n} points)")
    for case in gcases.window_cases():
        ours = gcases.window_fn(case, "ours", data)()
        gcases.check_window(case, ours, gcases.window_fn(case, "scipy", data)())
    lines.append("window_counts == uniform_filter x window volume on the interior, every window case")
    return lines


# ----------------------------------------------------------------------------------------------
# report


def run(quick: bool, log) -> str:
    sizes = ("1M",) if quick else ("1M", "10M")
    rounds = {"1M": 9 if quick else 15, "10M": 9}
    budget = {"1M": 2.0 if quick else 6.0, "10M": 8.0}
    window_rounds = 15 if quick else 41
    data = gcases.Data()
    started = time.perf_counter()
    whole = CpuMonitor()

    log("checking results ...")
    checks = check_counts(data)

    hist_rows, hist_results = [], {}
    for case in gcases.hist_cases(sizes):
        log(f"histogram {case.id} ...")
        fns = {impl: gcases.hist_fn(case, impl, data) for impl in gcases.HIST_IMPLS}
        fns[ONE_THREAD] = gcases.single_thread(fns["ours"])
        mon = CpuMonitor()
        res = measure(fns, rounds[case.size], budget[case.size])
        hist_results[case] = res
        ours = np.median(res["ours"])
        row = [case.id, fmt_ms(res["ours"]), fmt_ms(res[ONE_THREAD])]
        for peer in gcases.PEERS:
            row += [f"{fmt_ms(res[peer])} (n={len(res[peer])})" if len(res[peer]) < len(res["ours"])
                    else fmt_ms(res[peer]), f"**{np.median(res[peer]) / ours:.2f}**"]
        row.append(fmt_pct(mon.others()))
        hist_rows.append(row)
        log("  " + " | ".join(row))
        if case.size == "10M" and case.dims == 2:
            data.drop(case.n, 2)  # the 10M 2-D points are not needed any more

    window_rows = []
    for case in gcases.window_cases():
        log(f"window {case.id} ...")
        fns = {impl: gcases.window_fn(case, impl, data) for impl in gcases.WINDOW_IMPLS}
        fns[ONE_THREAD] = gcases.single_thread(fns["ours"])
        mon = CpuMonitor()
        res = measure(fns, window_rounds, 5.0)
        ratio = np.median(res["scipy"]) / np.median(res["ours"])
        row = [case.id, fmt_ms(res["ours"]), fmt_ms(res[ONE_THREAD]), fmt_ms(res["scipy"]), f"**{ratio:.2f}**",
               fmt_pct(mon.others())]
        window_rows.append(row)
        log("  " + " | ".join(row))

    # targets
    def med(case, impl):
        return float(np.median(hist_results[case][impl]))

    def verdict(ok):
        return "**met**" if ok else "**MISSED**"

    targets = []
    for size in sizes:
        c2 = gcases.HistCase(size, 2, 256)
        ms, ms1 = med(c2, "ours") * 1e3, med(c2, ONE_THREAD) * 1e3
        vs, vs1 = med(c2, "fast-histogram") / med(c2, "ours"), med(c2, "fast-histogram") / med(c2, ONE_THREAD)
        if size == "10M":
            targets.append(f"- 10M 2-D points into 256^2 in <= {TARGET_2D_MS:g} ms: {ms:.1f} ms — "
                           f"{verdict(ms <= TARGET_2D_MS)} (1 thread: {ms1:.1f} ms)")
            targets.append(f"- 10M 2-D points into 256^2 >= {TARGET_2D_VS_FH:g}x fast-histogram: "
                           f"{vs:.2f}x — {verdict(vs >= TARGET_2D_VS_FH)} (1 thread: {vs1:.2f}x)")
        for bins in (64, 256):
            c3 = gcases.HistCase(size, 3, bins)
            v3 = med(c3, "fast-histogram") / med(c3, "ours")
            v31 = med(c3, "fast-histogram") / med(c3, ONE_THREAD)
            targets.append(f"- {size} 3-D points into {bins}^3 >= {TARGET_3D_VS_FH:g}x fast-histogram: "
                           f"{v3:.2f}x — {verdict(v3 >= TARGET_3D_VS_FH)} (1 thread: {v31:.2f}x)")
    if quick:
        targets.append("- (--quick: 1M points only; the 10M 2-D targets need the full run)")

    busy = whole.others()
    warning = ([] if busy is None or busy < BUSY_WARNING else [
        f"**Warning: other processes used {fmt_pct(busy)} of the CPU during this run.** The "
        "multi-threaded timings (ours, torch) are inflated, the more so the shorter the call; "
        "rerun on a quiet machine before drawing conclusions (see the \"ours 1 thread\" column "
        "and the per-case \"others' CPU\").", ""])
    peer_head = "".join(f" {p} ms | {p}/ours |" for p in gcases.PEERS)
    out = [
        "# Grid-density benchmarks",
        "",
        f"Reproduce with `{REPRODUCE}` (add `--quick` for a 1M-points-only run of about a minute); "
        "the pytest-benchmark harness is `pytest benchmarks/bench_grid.py --benchmark-only` "
        "(see benchmarks/README.md).",
        "",
        "## Machine",
        "",
        *machine_lines(),
        f"- mode: {'quick' if quick else 'full'}; rounds per case: "
        + ", ".join(f"{s} points {rounds[s]}" for s in sizes)
        + f", window cases {window_rounds}; a slow peer runs in fewer rounds (its n is shown)",
        f"- other processes used {fmt_pct(busy)} of the machine's CPU during the run "
        f"(per case in the last column); {time.perf_counter() - started:.0f} s in all",
        "",
        *warning,
        "Times: per call, median [p20–p80] ms over interleaved rounds, after one warm-up call each. "
        "Ratio = peer median / our median (ours with the default torch threads): > 1 means ours is "
        "faster. \"ours 1 thread\" is the same call under torch.set_num_threads(1), for reference: "
        "with another process busy on a core, a multi-threaded call can wait a scheduler time slice "
        "on its slower thread. \"others' CPU\": share of the machine's CPU time that other processes "
        "used while the case ran (high = noisy).",
        "",
        "## grid_histogram (backend=\"cpu\") vs numpy.histogramdd, torch.histogramdd, fast-histogram",
        "",
        "float32 points uniform in [0, 1), range [0, 1] on every axis given to all; fast-histogram gets "
        "contiguous per-axis columns (made once, untimed).",
        "",
        f"| case | ours ms | ours 1 thread ms |{peer_head} others' CPU |",
        "|" + "---|" * (4 + 2 * len(gcases.PEERS)),
        *["| " + " | ".join(r) + " |" for r in hist_rows],
        "",
        "## window_counts (stride 1, valid windows) vs scipy.ndimage.uniform_filter",
        "",
        f"Grids: the int64 counts of {gcases.WINDOW_POINTS:,} points; scipy gets the same grid as "
        "float64 (converted once, untimed), mode=\"constant\".",
        "",
        "| case | ours ms | ours 1 thread ms | scipy ms | scipy/ours | others' CPU |",
        "|---|---|---|---|---|---|",
        *["| " + " | ".join(r) + " |" for r in window_rows],
        "",
        "## Targets",
        "",
        *targets,
        "",
        "## Checks (run before timing)",
        "",
        *[f"- {c}" for c in checks],
        "",
    ]
    return "\n".join(out)


MARKER = "grid-report"  # this report's section of RESULTS.md (harness.write_section)
SEED_PAIRS_MARKER = "grid-seed-pairs"


def run_seed_pairs(rounds: int, log) -> str:
    """The seed_pairs table: ours (and ours on one thread) against the tests' brute-force oracle."""
    data = gcases.Data()
    rows = []
    whole = CpuMonitor()
    for case in gcases.seed_pairs_cases():
        log(f"seed_pairs {case.id} ...")
        pts, windows = data.seed_pairs_input(case)
        fns = {impl: gcases.seed_pairs_fn(case, impl, data) for impl in gcases.SEED_PAIRS_IMPLS}
        ours = fns["ours"]()
        assert np.array_equal(ours.numpy(), fns["brute force"]()), f"seed_pairs differs from the oracle on {case.id}"
        fns[ONE_THREAD] = gcases.single_thread(fns["ours"])
        mon = CpuMonitor()
        res = measure(fns, rounds, budget_s=20.0)
        single = int(((windows.offsets[1:] - windows.offsets[:-1]) == 1).sum())
        brute = np.median(res["brute force"])
        row = [case.id, f"{windows.corners.shape[0]} ({single})", fmt_ms(res["ours"]), fmt_ms(res[ONE_THREAD]),
               f"{fmt_ms(res['brute force'])} (n={len(res['brute force'])})",
               f"**{brute / np.median(res['ours']):.0f}**", f"{brute / np.median(res[ONE_THREAD]):.0f}",
               fmt_pct(mon.others())]
        rows.append(row)
        log("  " + " | ".join(row))
    return "\n".join([
        "## seed_pairs (grid)",
        "",
        f"Reproduce with `python benchmarks/report.py --seed-pairs --out benchmarks/RESULTS.md` (this section "
        "only). Points: "
        f"{gcases.SEED_PAIRS_POINTS:,} float32, five Gaussian clusters on a 4% uniform background, bounds = their "
        "extent; sparse windows of 2 cells per axis, stride 2, threshold 2, so every sparse window has a single "
        "member and its second seed is the nearest point outside it. Peer: the tests' brute-force oracle "
        "(tests/seed_pairs_oracle.py, numpy, every window against all N points); both give the same pairs "
        "(checked before timing). Times: per call, median [p20–p80] ms, interleaved rounds after one warm-up. "
        "The brute force runs on one thread (numpy); with other processes busy on the cores, ours on torch's "
        "threads waits for them (compare \"ours 1 thread\").",
        "",
        f"- {datetime.date.today()}, {cpu_model()}, torch threads {torch.get_num_threads()}, git {git_revision()}; "
        f"other processes used {fmt_pct(whole.others())} of the CPU during the run",
        "",
        "| case | sparse windows (single-member) | ours ms | ours 1 thread ms | brute force ms | brute/ours "
        "| brute/ours 1 thread | others' CPU |",
        "|---|---|---|---|---|---|---|---|",
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1M points only, fewer repeats (about a minute)")
    parser.add_argument("--seed-pairs", action="store_true",
                        help="only the seed_pairs table (its own section of the --out file)")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    args = parser.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.seed_pairs:
        report, marker = run_seed_pairs(5 if args.quick else 11, log), SEED_PAIRS_MARKER
    else:
        report, marker = run(args.quick, log), MARKER
    print(report)
    if args.out is not None:
        write_section(args.out, marker, report)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
