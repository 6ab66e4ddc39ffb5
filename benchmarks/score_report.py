"""`prism score` against the published G-Vendi recipe and against GradientSketcher alone, side by side in
one run, and the peak memory of `prism score` as the number of rows grows. Prints markdown and (with
--out) replaces the "prism score" section of benchmarks/RESULTS.md (other sections are kept).

    python benchmarks/score_report.py --out benchmarks/RESULTS.md
    python benchmarks/score_report.py --quick                 # fewer samples, 10k-row memory point only
    python benchmarks/score_report.py --rss-rows 10000,100000,1000000   # the 1M point (~15 min here)

Model and data (sketch_setup.py, the same as the gradient-sketching benchmark): GSM8K train samples, a
2,048-token BPE tokenizer trained on GSM8K (no chat template: samples render as question + "\\n" + answer
+ eos), the seeded tiny Qwen2 (hidden 256, 4 layers, tied embeddings), fp32, at most 256 tokens.

Methods (k = 1024, every parameter, mean next-token loss over the answer tokens):
  recipe (a)       the published recipe (sketch_report.recipe_a): one sample per forward/backward, the
                   flattened gradient projected by TRAK's BasicProjector (Rademacher), 4 at a time.
  prism score      the whole command on a JSONL file: plan pass (read, render, tokenize), sketching in the
                   planned batches (--batch-tokens), shard files, manifest, merged state, novelty,
                   bootstrap interval, summary and spectrum; wall time from the call to the return.
  sketcher alone   pk.GradientSketcher on exactly the batches of the same run's plan, already tokenized
                   and padded (no reading, writing or finishing): the pipeline-overhead reference.
Each method runs --rounds times (interleaved); the tables give the median with the 20th-80th percentiles
(benchmarks/harness.py's statistic).
Memory: peak RSS of a `python -m prism_kernels score` child process on generated JSONL files of
--rss-rows rows with a micro proxy (hidden 16, 1 layer; kind kronecker so that the 1M point takes
minutes, not hours); flat in the number of rows means the pipeline streams.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sketch_setup as S  # noqa: E402
from harness import fmt_s, median_s, write_section  # noqa: E402  (the one timing harness)
from sketch_report import cpu_model, recipe_a  # noqa: E402

import prism_kernels as pk  # noqa: E402

K = 1024
MARKER = "score-report"  # this report's section of RESULTS.md (harness.write_section)


def save_proxy(directory: Path, model, tokenizer) -> Path:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_jsonl(path: Path, records) -> Path:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n")
    return path


def run_prism_score(data: Path, model_dir: Path, out: Path, kind: str, batch_tokens: int) -> tuple[float, dict]:
    from prism_kernels.score import score_dataset

    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    result = score_dataset([data], out, model=str(model_dir), k=K, kind=kind, seed=0, max_length=S.MAX_TOKENS,
                           batch_tokens=batch_tokens, device="cpu", dtype="float32", progress=False)
    return time.perf_counter() - start, dict(result.summary)


def planned_batches(run_dir: Path, model_dir: Path, data: Path):
    """The run's batches, rendered and padded exactly as the run did (outside any timing)."""
    import pyarrow.parquet as pq

    from prism_kernels.data import Renderer, detect_fields, open_dataset
    from prism_kernels.score import Scorer

    scorer = Scorer(str(model_dir), k=K, max_length=S.MAX_TOKENS, device="cpu", dtype="float32")
    dataset = open_dataset([str(data)])
    fields = detect_fields(dataset.columns())
    records = [r for batch in dataset.iter_records() for r in batch]
    renderer = Renderer(scorer.tokenizer, max_length=S.MAX_TOKENS)
    rendered = renderer.render_many([fields.extract(r.data) for r in records])
    plan = pq.read_table(run_dir / "plan.parquet").to_pylist()
    groups: dict[tuple[int, int], list[int]] = {}
    for row in plan:
        if row["batch"] >= 0:
            groups.setdefault((row["shard"], row["batch"]), []).append(row["row_id"])
    return [scorer.collate([rendered[i] for i in rows]) for _, rows in sorted(groups.items())]


def sketcher_alone(model, batches, kind: str) -> float:
    sketcher = pk.GradientSketcher(model, k=K, kind=kind, seed=0)
    start = time.perf_counter()
    for ids, mask, resp in batches:
        sketches, finite = sketcher.sketch(ids, mask, response_mask=resp)
        assert bool(finite.all())
    return time.perf_counter() - start


def rss_point(rows: int, model_dir: Path, work: Path, seed: int = 0) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of `prism score` on `rows` generated rows, in a fresh child process."""
    rng = random.Random(seed)
    words = "apples pears tickets coins marbles books pencils cookies shells stamps".split()
    data = work / f"rows-{rows}.jsonl"
    with open(data, "w") as f:
        for i in range(rows):
            a, b, w = rng.randint(2, 999), rng.randint(2, 999), rng.choice(words)
            f.write(json.dumps({"question": f"Sam has {a} {w} and buys {b} more. How many {w} now?",
                                "answer": f"{a} + {b} = {a + b}. The answer is {a + b}."}) + "\n")
    out = work / f"run-{rows}"
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    cmd = [sys.executable, "-c", probe, sys.executable, "-m", "prism_kernels", "score", str(data), "--model",
           str(model_dir), "--out", str(out), "--kind", "kronecker", "--k", str(K), "--max-length", "64",
           "--batch-tokens", "4096", "--shard-rows", "8192", "--device", "cpu", "--overwrite"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"prism score failed on {rows} rows:\n{proc.stderr[-2000:]}")
    data.unlink()
    shutil.rmtree(out)
    return int(proc.stdout.strip().splitlines()[-1]) / 1024, seconds


def micro_proxy(directory: Path, tokenizer) -> Path:
    import transformers

    cfg = transformers.Qwen2Config(vocab_size=S.VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                                   tie_word_embeddings=True, pad_token_id=0)
    torch.manual_seed(0)
    return save_proxy(directory, transformers.AutoModelForCausalLM.from_config(cfg).eval(), tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=192, help="GSM8K train samples for prism score")
    parser.add_argument("--recipe-samples", type=int, default=4, help="samples for the published recipe")
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--kinds", default="rademacher,kronecker")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rss-rows", default="10000,100000", help="comma-separated row counts ('' = none)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.samples, args.rounds, args.rss_rows = 64, 1, "10000"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    records = S.gsm8k()[: args.samples]
    tokenizer = S.train_tokenizer(S.gsm8k())
    model = S.tiny_qwen2()
    n_params = sum(p.numel() for p in model.parameters())
    work = Path(tempfile.mkdtemp(prefix="prism-score-bench-"))
    try:
        model_dir = save_proxy(work / "proxy", model, tokenizer)
        data = write_jsonl(work / "gsm8k.jsonl", records)

        recipe_samples = S.encode(tokenizer, records[: args.recipe_samples])
        a_time, _ = recipe_a(model, recipe_samples)
        a_rate = args.recipe_samples / a_time

        rows = []
        for kind in args.kinds.split(","):
            score_t, alone_t = [], []
            summary = {}
            batches = None
            for _ in range(args.rounds):
                t, summary = run_prism_score(data, model_dir, work / f"run-{kind}", kind, args.batch_tokens)
                score_t.append(t)
                if batches is None:
                    batches = planned_batches(work / f"run-{kind}", model_dir, data)
                alone_t.append(sketcher_alone(model, batches, kind))
            n = summary["n"]
            score_rate = [n / t for t in score_t]
            alone_rate = [n / t for t in alone_t]
            rows.append((kind, n, len(batches), score_t, alone_t, median_s(score_rate),
                         median_s(alone_rate), summary["gvendi"]["q1"]))

        rss = []
        if args.rss_rows:
            micro = micro_proxy(work / "micro", tokenizer)
            for count in (int(x) for x in args.rss_rows.split(",")):
                rss.append((count, *rss_point(count, micro, work)))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    targets = {"rademacher": 100, "kronecker": 300}
    lines = [f"## prism score (the main job) against the published recipe, k = {K}", "",
             f"{datetime.date.today()}, {cpu_model()}, {torch.get_num_threads()} threads (2 cores, shared: expect "
             f"noise), torch {torch.__version__}, prism_kernels {pk.__version__}. Tiny Qwen2 ({n_params:,} "
             f"parameters), GSM8K train samples 0..{args.samples - 1}, --batch-tokens {args.batch_tokens}; the "
             f"recipe on the first {args.recipe_samples}. Times: median [p20-p80] of {args.rounds} round(s). "
             f"Reproduce: `python benchmarks/score_report.py --out benchmarks/RESULTS.md`.", "",
             "| kind | rows | batches | prism score s | sketcher alone s | prism score samples/s | vs recipe (a) "
             "| target | pipeline vs sketcher alone (target >= 0.85x) | G-Vendi q=1 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, n, nb, st, at, srate, arate, g in rows:
        lines.append(f"| {kind} | {n} | {nb} | {fmt_s(st)} | {fmt_s(at)} | {srate:.2f} | {srate / a_rate:.0f}x | "
                     f">= {targets.get(kind, '-')}x | {srate / arate:.2f}x | {g:.3f} |")
    lines += ["", f"Recipe (a): {a_rate:.3f} samples/s ({a_time:.1f} s for {args.recipe_samples} samples).", ""]
    if rss:
        lines += ["### Peak memory against rows (micro proxy, kronecker, k = 1024, --shard-rows 8192)", "",
                  "| rows | peak RSS MB | seconds | rows/s |", "|---:|---:|---:|---:|"]
        lines += [f"| {count:,} | {mb:.0f} | {sec:.0f} | {count / sec:.0f} |" for count, mb, sec in rss]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_section(args.out, MARKER, text)


if __name__ == "__main__":
    main()
