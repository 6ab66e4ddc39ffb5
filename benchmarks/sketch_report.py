"""Gradient sketching against the published G-Vendi recipe, side by side in one run, and the
projection kernel alone against torch.mm with a stored matrix. Prints markdown and (with --out)
replaces the "Gradient sketching" section of benchmarks/RESULTS.md (other sections are kept).

    python benchmarks/sketch_report.py --out benchmarks/RESULTS.md
    python benchmarks/sketch_report.py --quick                   # fewer samples, no kernel table

Model and data (sketch_setup.py): GSM8K train samples ("Question: ...\\nAnswer: ..." with the loss on
the answer), a 2,048-token BPE tokenizer trained on GSM8K, a seeded tiny Qwen2 (hidden 256, 4
layers, 4 heads, 2 KV heads, intermediate 1024, tied embeddings), <= 256 tokens, fp32, eval mode.

Methods (all: k = 1024, every parameter, mean next-token loss over the answer tokens):
  recipe (a)  the published recipe: one sample per forward/backward, gradients flattened, TRAK's
              BasicProjector (Rademacher) on 4 gradients at a time (it regenerates its P x k matrix
              block by block on every call).
  recipe (b)  the same with a stored random matrix and torch.mm. The P x 1024 fp32 matrix (18 GB)
              does not fit this machine, so torch.mm is timed on a stored [2^19, 1024] slice and
              scaled by P / 2^19 (the product is linear in P); the forward/backward part is measured.
  ours        pk.GradientSketcher, batches of --batch samples (right padding) formed after sorting the
              samples by length (less padding), one forward/backward per batch, kinds rademacher /
              sparse (s = 4) / kronecker (32 x 32); gaussian only with --kinds (its generator is
              scalar: ~40x the Rademacher cost per entry).
Timing (benchmarks/harness.py, the one harness): wall time of whole passes over the same samples,
--rounds passes per method, interleaved (the recipes among themselves, then our kinds), reported as the
median with the 20th-80th percentiles; samples/s = samples / median seconds. Ours is warmed up with
one batch per kind first; the recipes have no warm-up pass (one costs minutes); the kernel table
warms up every implementation with one call.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sketch_setup as S  # noqa: E402
from harness import fmt_s, measure, median_s, write_section  # noqa: E402  (the one timing harness)

import prism_kernels as pk  # noqa: E402

K = 1024
MARKER = "sketch-report"  # this report's section of RESULTS.md (harness.write_section)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def flat_grad(model, ids, labels) -> torch.Tensor:
    """One sample's flattened gradient (the recipe's per-sample step)."""
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=ids[None]).logits[0, :-1]
    target = labels[1:]
    valid = target != -100
    torch.nn.functional.cross_entropy(logits[valid], target[valid]).backward()
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def recipe_a(model, samples) -> tuple[float, float]:
    """(seconds, of which projection) for the samples, 4 projected at a time with BasicProjector."""
    from trak.projectors import BasicProjector, ProjectionType

    dim = sum(p.numel() for p in model.parameters())
    projector = BasicProjector(dim, K, 0, ProjectionType.rademacher, torch.device("cpu"))
    start = time.perf_counter()
    proj_time = 0.0
    for i in range(0, len(samples), 4):
        grads = torch.stack([flat_grad(model, *s) for s in samples[i:i + 4]])
        t = time.perf_counter()
        projector.project(grads, model_id=0)
        proj_time += time.perf_counter() - t
    return time.perf_counter() - start, proj_time


def recipe_b(model, samples) -> tuple[float, float]:
    """(seconds, of which projection, extrapolated from a stored [2^19, k] slice)."""
    dim = sum(p.numel() for p in model.parameters())
    part = 1 << 19
    matrix = torch.randint(0, 2, (part, K), dtype=torch.float32).mul_(2).sub_(1)
    start = time.perf_counter()
    mm_time = 0.0
    for i in range(0, len(samples), 4):
        grads = torch.stack([flat_grad(model, *s) for s in samples[i:i + 4]])
        t = time.perf_counter()
        torch.mm(grads[:, :part], matrix)
        mm_time += (time.perf_counter() - t) * dim / part
    fwd_bwd = time.perf_counter() - start - mm_time * part / dim
    return fwd_bwd + mm_time, mm_time


def ours(model, samples, kind, batch):
    """A pass of pk.GradientSketcher over the samples (batches formed after sorting by length), as
    a zero-argument callable; the sketcher is made and warmed up with one batch here."""
    sketcher = pk.GradientSketcher(model, k=K, kind=kind, seed=0)
    samples = sorted(samples, key=lambda s: len(s[0]))
    batches = [S.pad_batch(samples[i:i + batch]) for i in range(0, len(samples), batch)]
    ids, mask, labels = batches[0]
    sketcher.sketch(ids, mask, labels=labels)  # warm-up

    def run():
        for ids, mask, labels in batches:
            sketches, finite = sketcher.sketch(ids, mask, labels=labels)
            assert finite.all()
    return run


def with_projection_time(recipe, model, samples, projection: list):
    """A zero-argument pass of ``recipe``; appends the pass's projection seconds to ``projection``."""
    def run():
        projection.append(recipe(model, samples)[1])
    return run


def check_exactness(model, samples) -> float:
    """Relative error of our batched Rademacher sketch of sample 1 against pk.sketch applied to the
    sample's own flattened gradient (one-sample backward), parameter by parameter."""
    sketcher = pk.GradientSketcher(model, k=K, seed=0)
    ids, mask, labels = S.pad_batch(samples[:4])
    got = sketcher.sketch(ids, mask, labels=labels).sketches[1]
    flat_grad(model, *samples[1])
    expected = torch.zeros(K)
    for name, p in model.named_parameters():
        expected += pk.sketch(p.grad.reshape(1, -1), K, "rademacher", 0, pk.param_block(name))[0]
    return float((got - expected).norm() / expected.norm())


def kernel_table(rounds: int) -> list[str]:
    batch, width = 64, 1 << 20
    x = torch.randn(batch, width)
    flop = 2 * batch * width * K
    matrix = torch.randint(0, 2, (width, K), dtype=torch.float32).mul_(2).sub_(1)
    base_name = "torch.mm, stored [2^20, 1024] fp32 matrix"
    impls = {base_name: lambda: torch.mm(x, matrix),
             "pk.sketch rademacher (cpu)": lambda: pk.sketch(x, K, "rademacher"),
             "pk.sketch sparse s=4 (cpu)": lambda: pk.sketch(x, K, "sparse")}
    times = measure(impls, rounds)
    # The Gaussian generator is scalar (~7 s here): one call, after the others' warm-up.
    times["pk.sketch gaussian (cpu), 1 run"] = measure({"g": lambda: pk.sketch(x, K, "gaussian")}, 1,
                                                       warmup=False)["g"]
    base = median_s(times[base_name])
    rows = ["| B = 64, P = 2^20, k = 1024 | median [p20-p80] s | GFLOP/s (2BPk) | vs torch.mm |",
            "|---|---:|---:|---:|"]
    for name, ts in times.items():
        med = median_s(ts)
        rows.append(f"| {name} | {fmt_s(ts)} | {flop / med / 1e9:.1f} | {base / med * 100:.0f}% |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=96, help="samples for GradientSketcher")
    parser.add_argument("--recipe-samples", type=int, default=4, help="samples for recipes (a) and (b)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--kinds", default="rademacher,sparse,kronecker")
    parser.add_argument("--rounds", type=int, default=3, help="passes per method (interleaved)")
    parser.add_argument("--recipe-rounds", type=int, default=1,
                        help="passes per recipe (recipe (a) takes ~2 minutes a pass here)")
    parser.add_argument("--kernel-rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.samples, args.rounds, args.kernel_rounds = 32, 1, 0

    records = S.gsm8k()
    tokenizer = S.train_tokenizer(records)
    model = S.tiny_qwen2()
    samples = S.encode(tokenizer, records[: max(args.samples, args.recipe_samples)])
    n_params = sum(p.numel() for p in model.parameters())
    tokens = sum(len(s[0]) for s in samples[: args.samples])

    lines = []
    err = check_exactness(model, samples)
    recipe_samples = samples[: args.recipe_samples]
    a_proj, b_proj = [], []
    recipes = measure({"a": with_projection_time(recipe_a, model, recipe_samples, a_proj),
                       "b": with_projection_time(recipe_b, model, recipe_samples, b_proj)},
                      args.recipe_rounds, warmup=False)
    kinds = args.kinds.split(",")
    passes = measure({kind: ours(model, samples[: args.samples], kind, args.batch) for kind in kinds}, args.rounds,
                     warmup=False)
    a_rate = args.recipe_samples / median_s(recipes["a"])
    per_sample = args.recipe_samples * args.recipe_rounds
    results = [("recipe (a): 1 sample/fwd-bwd + TRAK BasicProjector (4 at a time)", a_rate,
                f"{fmt_s(recipes['a'])} s a pass; projection {sum(a_proj) / per_sample:.2f} s/sample"),
               ("recipe (b): 1 sample/fwd-bwd + stored matrix, torch.mm (extrapolated)",
                args.recipe_samples / median_s(recipes["b"]),
                f"{fmt_s(recipes['b'])} s a pass; projection {sum(b_proj) / per_sample:.2f} s/sample")]
    for kind in kinds:
        results.append((f"pk.GradientSketcher kind={kind}, batch {args.batch}", args.samples / median_s(passes[kind]),
                        f"{fmt_s(passes[kind])} s a pass"))

    lines += [f"## Gradient sketching (G-Vendi per-sample gradients, k = {K})", "",
              f"{datetime.date.today()}, {cpu_model()}, {torch.get_num_threads()} threads (2 cores shared with "
              f"other jobs: expect noise), torch {torch.__version__}, prism_kernels {pk.__version__}.", "",
              f"Tiny Qwen2 from a config ({n_params:,} parameters, tied embeddings), 2,048-token BPE trained on "
              f"GSM8K, GSM8K train samples 0..{args.samples - 1} ({tokens:,} tokens, <= 256 each); recipes on the "
              f"first {args.recipe_samples}. Passes: median [p20-p80] of {args.rounds} per kind, "
              f"{args.recipe_rounds} per recipe (interleaved). "
              f"Reproduce: `python benchmarks/sketch_report.py --out benchmarks/RESULTS.md`.",
              "", "| method | samples/s | vs recipe (a) | vs recipe (b) | note |", "|---|---:|---:|---:|---|"]
    b_rate = results[1][1]
    for name, rate, note in results:
        lines.append(f"| {name} | {rate:.3f} | {rate / a_rate:.0f}x | {rate / b_rate:.1f}x | {note} |")
    lines += ["", f"Exactness check in the same run: batched Rademacher sketch of sample 1 vs the sketch of its "
              f"one-sample gradient, relative error {err:.1e}.", ""]
    if args.kernel_rounds:
        lines += ["### Projection kernel alone", ""] + kernel_table(args.kernel_rounds) + [""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        write_section(args.out, MARKER, text)


if __name__ == "__main__":
    main()
