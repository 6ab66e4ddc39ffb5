"""The demo: ``prism score`` on four subsets of controlled diversity, then the grid-density picture.

    python -m prism_kernels.demo [--out demo_out] [--rows 64] [--seed 0] [--skip-grid]

Part 1 writes four equal-size subsets of templated word problems (drawn from the first 1, 4, 16 and 64
templates of prism_kernels.demo.problems) to ``<out>/data/``, scores each with the proxy LM shipped in
the package (prism_kernels/assets/demo-lm) through the same code as ``prism score`` (one run directory
per subset under ``<out>/runs/``: sketches, samples.parquet, state, summary.json, spectrum.png), prints
the four G-Vendi values, checks that they rise strictly, and draws ``<out>/ladder.png``.
Part 2 is the grid-density demo (prism_kernels.demo.grid) writing ``<out>/grid/density.png``.
The exit status is 1 when the G-Vendi values do not rise strictly.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from prism_kernels.demo import DEMO_MODEL_DIR
from prism_kernels.demo import problems

# Scoring options of every subset (the defaults of `prism score`, on CPU, with the shipped proxy).
SCORE_OPTIONS = dict(k=1024, kind="rademacher", seed=0, params="all", device="cpu", dtype="float32")


def score_subset(path: Path, run_dir: Path) -> dict:
    """Runs ``prism score PATH --model DEMO_MODEL_DIR --out RUN_DIR`` (the library call behind it) and
    returns the run's summary.json as a dict (``summary["gvendi"]["q1"]``, ``summary["n"]``, ...).
    A subset fits one shard (the default --shard-rows), so the run has no bootstrap interval: its
    100 resamples would cost more than the scoring itself at this size."""
    try:
        from prism_kernels.score import score_dataset
    except ImportError as e:  # the scoring pipeline is a separate part of the package
        raise SystemExit(f"prism demo: error: prism_kernels.score.score_dataset is not available ({e})") from None
    result = score_dataset([path], run_dir, model=str(DEMO_MODEL_DIR), overwrite=True, progress=False,
                           **SCORE_OPTIONS)
    return result.summary


def rises_strictly(values) -> bool:
    """True when every value is larger than the one before it."""
    return all(b > a for a, b in zip(values, values[1:]))


def plot_ladder(counts, summaries, run_dirs, path: Path) -> None:
    """``path``: G-Vendi (q = 1, with the bootstrap interval when the run has one) against the number of
    templates, beside the eigenvalue spectra of the runs' merged states (log scale)."""
    import matplotlib

    import prism_kernels as pk

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    q1 = [s["gvendi"]["q1"] for s in summaries]
    left.plot(counts, q1, "o-", color="tab:blue")
    for c, s in zip(counts, summaries):
        ci = (s.get("ci95") or {}).get("q1")
        if ci and all(v is not None for v in ci):
            left.vlines(c, ci[0], ci[1], color="tab:blue", alpha=0.5)
        left.annotate(f"{s['gvendi']['q1']:.1f}", (c, s["gvendi"]["q1"]), textcoords="offset points",
                      xytext=(6, -12))
    left.set_xscale("log", base=2)
    left.set_xticks(counts, [str(c) for c in counts])
    left.set_xlabel("templates in the subset")
    left.set_ylabel("G-Vendi (q = 1)")
    left.set_title(f"G-Vendi of {summaries[0]['n']} problems per subset")
    for c, run_dir in zip(counts, run_dirs):
        eig = [v for v in pk.VendiState.load(run_dir / "state.safetensors").spectrum().tolist() if v > 1e-12]
        right.plot(range(1, len(eig) + 1), eig, label=f"{c} template{'s' if c > 1 else ''}")
    right.set_yscale("log")
    right.set_xscale("log")
    right.set_xlabel("eigenvalue rank")
    right.set_ylabel("eigenvalue of the sketch Gram / n")
    right.set_title("spectra")
    right.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_ladder(out: Path, rows: int, seed: int) -> bool:
    """Part 1; returns whether the G-Vendi values rise strictly."""
    counts = list(problems.LADDER)
    paths = problems.write_ladder(out / "data", rows, counts, seed)
    print(f"part 1: G-Vendi of {len(counts)} subsets of {rows} word problems, drawn from the first "
          f"{', '.join(map(str, counts))} of {len(problems.TEMPLATES)} templates (seed {seed})")
    print(f"  proxy: {DEMO_MODEL_DIR} (shipped with the package), sketches k={SCORE_OPTIONS['k']} "
          f"{SCORE_OPTIONS['kind']}, loss on the answer tokens")
    summaries, run_dirs = [], [out / "runs" / problems.subset_name(c) for c in counts]
    for c, run_dir in zip(counts, run_dirs):
        start = time.perf_counter()
        summary = score_subset(paths[c], run_dir)
        summaries.append(summary)
        g, ci = summary["gvendi"], (summary.get("ci95") or {}).get("q1")
        ci_text = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and all(v is not None for v in ci) else ""
        print(f"  {c:>2} template{'s' if c > 1 else ' '}: G-Vendi q=1 {g['q1']:7.2f}{ci_text}  q=2 {g['q2']:7.2f}  "
              f"q=inf {g['inf']:6.2f}  ({summary['n']} rows, {time.perf_counter() - start:.1f} s)")
    q1 = [s["gvendi"]["q1"] for s in summaries]
    ok = rises_strictly(q1)
    chain = " < ".join(f"{v:.2f}" for v in q1) if ok else ", ".join(f"{v:.2f}" for v in q1)
    print(f"check: G-Vendi rises strictly with the number of templates ({chain}): {'OK' if ok else 'FAILED'}")
    plot_ladder(counts, summaries, run_dirs, out / "ladder.png")
    print(f"  wrote {out / 'ladder.png'}, spectra in {out / 'runs'}/*/spectrum.png, data in {out / 'data'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prism_kernels.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("PRISM_DEMO_OUT", "demo_out")),
                        help="output folder (default demo_out)")
    parser.add_argument("--rows", type=int, default=64,
                        help="problems per subset (default 64, the minimum: one per template in the largest "
                             "subset; more rows separate the values further and take longer)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsets' draw (default 0)")
    parser.add_argument("--skip-grid", action="store_true", help="skip part 2, the grid-density demo")
    args = parser.parse_args(argv)
    if args.rows < max(problems.LADDER):
        parser.error(f"--rows must be at least {max(problems.LADDER)} (one row per template), got {args.rows}")
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    ok = run_ladder(args.out, args.rows, args.seed)
    if not args.skip_grid:
        from prism_kernels.demo import grid

        print("part 2: grid density of 200,000 synthetic 2-D points")
        grid.main(["--out", str(args.out / "grid")])
    print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
