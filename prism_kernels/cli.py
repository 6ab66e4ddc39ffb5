"""The ``prism`` command (the only module that reads argv).

    prism score DATA... [options]     G-Vendi of a dataset (resumable run directory)
    prism compare RUN...              finished runs ranked by G-Vendi
    prism bench [--quick]             the repository's benchmark reports (in a source checkout)

User mistakes print ``prism: error: <one line>`` and exit with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .data.options import int_at_least, number_in

SCORE_EPILOG = """\
examples:
  # G-Vendi of a JSONL file with the paper's proxy (from the local Hugging Face cache)
  prism score train.jsonl --out runs/train
  # a local proxy, smaller sketches, the first 10,000 rows only
  prism score train.jsonl --model ./my-proxy --k 512 --limit 10000 --out runs/train-10k
  # several files scored as one dataset, explicit field mapping
  prism score part1.parquet part2.parquet --fields prompt=question,response=solution --out runs/parts
  # a datasets folder (save_to_disk) or a cached hub dataset with a split
  prism score ./my_dataset_dir --out runs/mine
  prism score openai/gsm8k --split train --out runs/gsm8k
  # many machines (Ray Data): same plan, same files, same numbers
  prism score train.jsonl --engine ray --address auto --workers 8 --gpus-per-worker 1 --out runs/train

Fields are detected from the column names (question/answer, prompt/completion, prompt/response,
instruction[/input]/output, messages); pass --fields when they are named otherwise. Each sample is
rendered with the proxy's chat template and the loss covers only the response tokens.

Interrupt it at any time (Ctrl-C, kill -9): the same command again continues where it stopped.
The same --out with other options is refused (it names what differs); --overwrite starts again.
RUN_DIR then holds summary.json, samples.parquet (per row: loss, novelty, ...), spectrum.png,
state.safetensors and sketches/ (see docs/score.md).

Models are loaded offline (HF_HUB_OFFLINE=1 unless you set it): pass a local folder, or a hub id
that is already in the Hugging Face cache."""


# argparse converters shared with the synthesis loops' options
_positive = int_at_least(1)
_nonneg_float = number_in(0)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``prism`` (subcommands score, compare, bench, synth)."""
    from .score.config import DEFAULT_MODEL

    parser = argparse.ArgumentParser(
        prog="prism", description="Gradient diversity (G-Vendi) of datasets, on compiled kernels.",
        epilog="Run 'prism score --help' to get started.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("score", help="G-Vendi of a dataset (resumable)",
                       description="Score DATA with a proxy LM: per-sample gradient sketches, the dataset's "
                                   "G-Vendi (q = 1, 2, inf) with a 95% interval, per-sample loss and novelty.",
                       epilog=SCORE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("data", nargs="+", metavar="DATA",
                   help="JSONL / JSON / Parquet / CSV files, a datasets folder (save_to_disk) or a cached HF "
                        "dataset id; several are scored as one dataset")
    g = s.add_argument_group("what to score")
    g.add_argument("--out", metavar="RUN_DIR", default=None,
                   help="run directory (default: runs/<name of the first DATA>)")
    g.add_argument("--split", default=None, help="split of a HF dataset (e.g. train)")
    g.add_argument("--fields", default=None, metavar="SPEC",
                   help="field mapping, e.g. prompt=question,response=answer or messages=conversation "
                        "(default: detected)")
    g.add_argument("--limit", type=_positive, default=None, metavar="N", help="score only the first N rows")
    g.add_argument("--on-bad-record", choices=("skip", "fail"), default="skip",
                   help="a malformed record / missing field / empty response: skip it (reported with file and "
                        "line, counted) or stop with an error (default: skip)")
    m = s.add_argument_group("proxy model and sketch")
    m.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"HF id (from the local cache) or local folder of a causal LM (default: {DEFAULT_MODEL})")
    m.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model's)")
    m.add_argument("--k", type=_positive, default=1024, help="sketch dimension (default: 1024)")
    m.add_argument("--kind", choices=("rademacher", "gaussian", "sparse", "kronecker"), default="rademacher",
                   help="random projection (default: rademacher; kronecker is fastest)")
    m.add_argument("--seed", type=int, default=0, help="projection seed (default: 0)")
    m.add_argument("--params", default="all",
                   help="parameters whose gradient is sketched: all, linear, or a regex on names (default: all)")
    m.add_argument("--max-length", type=_positive, default=2048,
                   help="most tokens per sample; longer prompts are cut from the left (default: 2048)")
    m.add_argument("--trust-remote-code", action="store_true", help="allow model code shipped with the model")
    r = s.add_argument_group("how to run")
    r.add_argument("--batch-tokens", type=_positive, default=16384,
                   help="padded tokens per forward/backward (default: 16384)")
    r.add_argument("--shard-rows", type=_positive, default=1024,
                   help="rows per output shard: the unit of resume and of the bootstrap (default: 1024)")
    r.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda if available")
    r.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                   help="model dtype (default: bfloat16 on GPU, float32 on CPU)")
    r.add_argument("--threads", type=_positive, default=None, metavar="N",
                   help="CPU threads for torch (default: torch's choice, all cores); on a machine shared with "
                        "other jobs, 1 can be much faster")
    r.add_argument("--engine", choices=("local", "ray"), default="local", help="default: local")
    r.add_argument("--address", default=None, help="Ray cluster address (--engine ray; default: a local Ray)")
    r.add_argument("--workers", type=_positive, default=1, help="Ray workers, one proxy each (default: 1)")
    r.add_argument("--gpus-per-worker", type=_nonneg_float, default=None, metavar="G",
                   help="GPUs per Ray worker; > 0 also makes --device auto mean cuda on the workers "
                        "(default: the Ray engine's choice)")
    r.add_argument("--overwrite", action="store_true", help="delete the run in RUN_DIR and start again")
    r.add_argument("--quiet", action="store_true", help="no progress bars and no summary table")

    c = sub.add_parser("compare", help="rank finished runs by G-Vendi",
                       description="Print finished runs ranked by G-Vendi (q = 1) with their intervals; "
                                   "nothing is recomputed.")
    c.add_argument("runs", nargs="+", metavar="RUN", help="run directories written by prism score")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")

    b = sub.add_parser("bench", help="run the benchmark reports of a source checkout",
                       description="Runs the repository's benchmarks/*report*.py scripts and prints their "
                                   "tables (ratios against the named peers). Needs a source checkout.")
    b.add_argument("--quick", action="store_true", help="pass --quick to every report (smaller cases)")
    b.add_argument("--only", default=None, help="run only reports whose file name contains this text")

    y = sub.add_parser("synth", help="grow a dataset with an LLM: Prismatic Synthesis or EmbedSDG",
                       description="Synthesis loops on the kernels. Generators are named as --generator URL "
                                   "--generator-model NAME (an OpenAI-compatible server, key from "
                                   "OPENAI_API_KEY) or --generator local:PATH (a local causal LM).")
    loops = y.add_subparsers(dest="loop", metavar="LOOP")
    _add_loop(loops, "prismatic", "prismatic", "add_prismatic_arguments",
              "keep generated samples that land in sparse gradient-space clusters (Prismatic Synthesis)")
    _add_loop(loops, "embedsdg", "embedsdg", "add_embedsdg_arguments",
              "generate examples in sparse regions of the student's embedding map (EmbedSDG)")
    return parser


def _add_loop(loops, name: str, module: str, adder: str, help_text: str) -> None:
    """Adds ``prism synth NAME`` with the options of ``prism_kernels.synth.MODULE.ADDER`` (when installed)."""
    import importlib

    try:
        add_arguments = getattr(importlib.import_module(f"prism_kernels.synth.{module}"), adder)
    except ImportError:  # a checkout without that loop, or its extra not installed
        return
    p = loops.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                         epilog=f"Offline demo on the package's tiny models: prism synth {name} --demo "
                                "(other options override the demo's settings).")
    p.add_argument("--demo", action="store_true",
                   help="run the offline demo: built-in data and the shipped tiny models as "
                        + ("proxy and generator" if name == "prismatic" else "student and teacher")
                        + " (about a minute on 2 CPU cores; see prism_kernels/demo/synth.py)")
    add_arguments(p)
    p.set_defaults(_loop_defaults=lambda: _defaults_of(add_arguments))


def _defaults_of(add_arguments) -> argparse.Namespace:
    """The namespace of an empty command line for a loop's options (what --demo may override)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([])


def _cmd_score(args, console) -> int:
    from .score import score_dataset

    _quiet_transformers()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = args.out or os.path.join("runs", Path(args.data[0].rstrip("/")).name.split(".")[0] or "run")
    score_dataset(args.data, out, model=args.model, tokenizer=args.tokenizer, k=args.k, kind=args.kind,
                  seed=args.seed, params=args.params, max_length=args.max_length, batch_tokens=args.batch_tokens,
                  shard_rows=args.shard_rows, limit=args.limit, split=args.split, fields=args.fields,
                  on_bad_record=args.on_bad_record, device=args.device, dtype=args.dtype,
                  trust_remote_code=args.trust_remote_code, engine=args.engine, workers=args.workers,
                  gpus_per_worker=args.gpus_per_worker, address=args.address, overwrite=args.overwrite,
                  progress=None if not args.quiet else False, print_result=not args.quiet, console=console)
    if not args.quiet:
        console.print(f"results in {out}/ (summary.json, samples.parquet, spectrum.png)", highlight=False)
    return 0


def _cmd_compare(args, console) -> int:
    import json

    from .score import compare_runs

    rows = compare_runs(args.runs)
    if args.json:
        print(json.dumps([{"run": r["run"], "n": r["summary"]["n"], "gvendi": r["summary"]["gvendi"],
                           "ci95": r["summary"].get("ci95")} for r in rows], indent=2))
    else:
        from rich.console import Console

        from .score.report import print_compare

        print_compare(rows, Console())
    return 0


def _cmd_bench(args, console) -> int:
    import subprocess

    from .data import DataError

    bench = Path(__file__).resolve().parent.parent / "benchmarks"
    scripts = sorted(p for p in bench.glob("*report*.py")) if bench.is_dir() else []
    if args.only:
        scripts = [p for p in scripts if args.only in p.name]
    if not scripts:
        raise DataError(f"prism bench needs a source checkout of prism_kernels (no benchmark reports in {bench}"
                        f"{' matching ' + repr(args.only) if args.only else ''}); clone the repository and run "
                        f"it there")
    status = 0
    for script in scripts:
        console.print(f"[bold]== {script.name}[/bold]", highlight=False)
        cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
        rc = subprocess.call(cmd, cwd=bench.parent)
        status = status or rc
    return 1 if status else 0


def _quiet_transformers() -> None:
    """transformers' own "Loading weights" / "Writing model shards" bars would interleave with our output."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _cmd_synth(args, console) -> int:
    import importlib

    if getattr(args, "loop", None) is None:
        raise _usage_error("prism synth needs a loop: prism synth prismatic ... or prism synth embedsdg ... "
                           "(see prism synth --help)")
    _quiet_transformers()
    if args.demo:
        from .demo import synth as demo

        run_demo = getattr(demo, f"run_{args.loop}_demo")
        return run_demo(args, args._loop_defaults(), say=lambda line: console.print(line, highlight=False))
    module = importlib.import_module(f"prism_kernels.synth.{args.loop}")
    result = getattr(module, f"run_{args.loop}")(args)
    return result if isinstance(result, int) else 0


def _usage_error(message: str):
    from .data import DataError

    return DataError(message)


def main(argv=None) -> int:
    """Entry point of the ``prism`` console script and ``python -m prism_kernels``; returns the exit status."""
    # Models and datasets come from disk or the local cache; never reach for the network unasked.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from rich.console import Console

    from .data import DataError

    console = Console(stderr=True)
    try:
        return {"score": _cmd_score, "compare": _cmd_compare, "bench": _cmd_bench,
                "synth": _cmd_synth}[args.command](args, console)
    except DataError as exc:
        msg = " ".join(str(exc).split())
        print(f"prism: error: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:  # permissions, a full disk, a vanished file: the environment, not a bug
        print(f"prism: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a generator server that stayed down: one line, and the run resumes
        if type(exc).__name__ != "GeneratorError":
            raise
        msg = " ".join(str(exc).split())
        print(f"prism: error: {msg} (finished requests are cached: run the same command again to resume)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prism: interrupted; run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
