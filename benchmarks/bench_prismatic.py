"""One Prismatic Synthesis round over the GSM8K training pool (7,473 rows) with a scripted generator: time per
stage, next to the official scripts' stages that can run here.

    PRISM_SHARED_DATA=/path/to/shared/data python benchmarks/bench_prismatic.py [--pool-rows N] [--quick] \
        [--out benchmarks/RESULTS.md]

Stages (ours): sketch the pool (prism_kernels.score.Scorer: batched per-sample gradients, k = 1024 Rademacher,
under a tiny Qwen2 built from a config here, since no real proxy can be downloaded), cluster (faiss spherical
k-means, k = 10% of the pool, 20 iterations; k-means++ and random seeding), one round of candidates (the
scripted generator through the real generator interface and request cache, parse, MinHash dedup against the
pool, sketch the candidates, the live-count filter), and the pool's G-Vendi (pk.vendi_score).

Official: the Prismatic scripts cluster with a hand-written k-means. ``official_kmeans`` below re-implements
that algorithm as we read it (seeding with the first k rows, plain Lloyd iterations in torch on normalised
rows, cosine assignment, centroid = re-normalised mean, an empty cluster keeps its centroid); the centroid
update is written with ``index_add_`` (vectorised), which is if anything kinder to it than a per-cluster loop.
Their one-sample-per-backward sketching with TRAK's fast_jl needs a CUDA GPU and is not timed here.
Prints a markdown table (median of --repeats runs where a stage is repeated).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py
DATA = Path(os.environ.get("PRISM_SHARED_DATA", REPO.parent / "shared" / "data"))


def official_kmeans(x, k: int, niter: int = 20):
    """The official scripts' k-means (re-implemented): first k rows as seeds, Lloyd iterations on the unit
    sphere. x: [n, d] float32 torch tensor. Returns (centroids [k, d], assignment [n])."""
    import torch

    x = torch.nn.functional.normalize(x, dim=1)
    c = x[:k].clone()
    for _ in range(niter):
        assign = (x @ c.T).argmax(dim=1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        nonempty = counts > 0
        c[nonempty] = torch.nn.functional.normalize(sums[nonempty], dim=1)
    assign = (x @ c.T).argmax(dim=1)
    return c, assign


def _cluster_stages(X, k: int, repeats: int) -> list[tuple[str, str, float]]:
    """Times faiss (k-means++ and random seeding) and the official loop on X [n, d]; rows for the table."""

    import torch

    from prism_kernels.synth.cluster import spherical_kmeans

    def med(fn):
        times, res = [], None
        for _ in range(repeats):
            t = time.perf_counter()
            res = fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times), res

    xt = torch.from_numpy(X)
    xn = torch.nn.functional.normalize(xt, dim=1)

    def objective(centroids, assign):  # mean cosine of a row to its centroid
        c = torch.as_tensor(centroids)
        return float((xn * c[torch.as_tensor(assign)]).sum(1).mean())

    t_pp, cl = med(lambda: spherical_kmeans(X, k, seed=0, init="kmeans++"))
    t_rand, cr = med(lambda: spherical_kmeans(X, k, seed=0, init="random"))
    t_off, (c_off, a_off) = med(lambda: official_kmeans(xt, k))
    return [("cluster: faiss spherical k-means, k-means++ seeding", f"k={k}, 20 it, obj {objective(cl.centroids, cl.assignment):.4f}", t_pp),
            ("cluster: faiss spherical k-means, random seeding", f"k={k}, 20 it, obj {objective(cr.centroids, cr.assignment):.4f}", t_rand),
            ("cluster: official loop (first-k seeds, torch Lloyd)", f"k={k}, 20 it, obj {objective(c_off, a_off):.4f}", t_off)], cl


def _print(title: str, rows, out: str | None = None) -> str:
    """Prints the markdown table of ``rows`` (and writes it to the ``prismatic-round`` section of ``out``,
    e.g. benchmarks/RESULTS.md, with harness.write_section); returns the markdown."""
    import faiss
    import torch

    from harness import write_section

    lines = [f"### {title}", "",
             f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
             f"torch threads {torch.get_num_threads()}, faiss {faiss.__version__}, load average "
             f"{os.getloadavg()[0]:.1f}. Reproduce: `PRISM_SHARED_DATA=... python benchmarks/bench_prismatic.py "
             f"--out benchmarks/RESULTS.md`.", "",
             "| stage | size | seconds |", "|---|---|---:|"]
    lines += [f"| {name} | {size} | {sec:.2f} |" for name, size, sec in rows]
    t = {name: sec for name, _, sec in rows}
    off = t["cluster: official loop (first-k seeds, torch Lloyd)"]
    lines += ["", f"official loop / faiss k-means++: {off / t['cluster: faiss spherical k-means, k-means++ seeding']:.2f}x; "
              f"official loop / faiss random seeding: {off / t['cluster: faiss spherical k-means, random seeding']:.2f}x "
              "(objective = mean cosine of a row to its centroid, higher is better)"]
    text = "\n".join(lines)
    print("\n" + text)
    if out:
        write_section(out, "prismatic-round", text)
    return text


def _cluster_only(args) -> int:
    import numpy as np

    from prism_kernels.synth.cluster import num_clusters

    X = np.random.default_rng(0).standard_normal((args.pool_rows, args.k)).astype(np.float32)
    rows, _ = _cluster_stages(X, num_clusters(args.pool_rows), args.repeats)
    _print(f"Prismatic clustering stages, {args.pool_rows} x {args.k} Gaussian stand-in sketches", rows)  # not written
    return 0


def _tiny_proxy(tmp: Path, texts: list[str]) -> Path:
    import tokenizers
    import torch
    import transformers

    bpe = tokenizers.Tokenizer(tokenizers.models.BPE())
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=1024, special_tokens=["<|endoftext|>", "<|im_end|>"],
                                             show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer)
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<|endoftext|>", eos_token="<|im_end|>")
    path = tmp / "proxy"
    tok.save_pretrained(path)
    cfg = transformers.Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                                   tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                                   eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    return path


def _scripted(request) -> str:
    """A scripted generator reply: a templated problem from the request's seed (some repeat: duplicates)."""
    s = int(request.seed or 0) % 5000
    a, b, c = s % 37 + 2, (s // 37) % 23 + 3, s % 11 + 1
    return (f"### Question\nA shop packs {a} boxes of {b} pencils and sells {c} boxes on day {s % 13}. "
            f"How many pencils are left?\n\n### Answer\n{a} x {b} = {a * b}; {c} x {b} = {c * b}; "
            f"{a * b} - {c * b} = {(a - c) * b}.\n\n### <final_answer>\n{(a - c) * b}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool-rows", type=int, default=7473)
    ap.add_argument("--candidates", type=int, default=512, help="generation requests in the round")
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3, help="runs of the clustering stages (median)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="1,000 pool rows, 128 candidates, 1 repeat")
    ap.add_argument("--out", default=None, metavar="MD",
                    help="also write the table to the prismatic-round section of this file (benchmarks/RESULTS.md)")
    ap.add_argument("--cluster-only", action="store_true",
                    help="time only the clustering stages, on Gaussian stand-in sketches of the pool's shape "
                         "(k-means time hardly depends on the values; for a machine too busy to sketch 7k rows)")
    args = ap.parse_args(argv)
    if args.quick:
        args.pool_rows, args.candidates, args.repeats = 1000, 128, 1

    import numpy as np
    import torch

    import prism_kernels as pk
    from prism_kernels.score import Scorer
    from prism_kernels.synth import CallableGenerator, GenerationRequest, RequestCache, parse_examples
    from prism_kernels.synth.cluster import SparseClusterFilter, num_clusters
    from prism_kernels.synth.dedup import Deduplicator
    from prism_kernels.synth.prismatic import candidate_record, split_final
    from prism_kernels.synth.prompts import prismatic_generation_messages
    from prism_kernels.synth.format import Example

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cluster_only:
        return _cluster_only(args)
    path = DATA / "gsm8k" / "train.jsonl"
    if not path.exists():
        sys.exit(f"GSM8K not found at {path} (set PRISM_SHARED_DATA)")
    with open(path) as f:
        pool = [json.loads(line) for _, line in zip(range(args.pool_rows), f)]
    rows: list[tuple[str, str, float | str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_prismatic_"))
    model_dir = _tiny_proxy(tmp, [r["question"] + "\n" + r["answer"] for r in pool[:2000]])
    scorer = Scorer(str(model_dir), k=args.k, kind="rademacher", seed=0, fields="prompt=question,response=answer",
                    max_length=512, device="cpu", batch_tokens=16384)

    t0 = time.perf_counter()
    out = scorer.sketch_records(pool)
    t_sketch = time.perf_counter() - t0
    X = out.sketches.numpy()[out.finite.numpy()]
    n = X.shape[0]
    k = num_clusters(n)
    rows.append(("sketch pool (Scorer, batched)", f"{n} rows, k={args.k}", t_sketch))

    cluster_rows, cl = _cluster_stages(X, k, args.repeats)
    rows.extend(cluster_rows)

    # one round of candidates
    gen = CallableGenerator(_scripted, "scripted", cache=RequestCache(tmp / "cache.sqlite"))
    rng = np.random.default_rng(0)
    texts = [(r["question"], *split_final(r["answer"])) for r in pool]
    reqs = [GenerationRequest(messages=tuple(prismatic_generation_messages(
        [Example(*texts[j]) for j in rng.choice(len(texts), 3, replace=False)])), seed=int(rng.integers(1 << 30)))
        for _ in range(args.candidates)]
    t0 = time.perf_counter()
    gens = gen.generate(reqs)
    cands = [ex for g in gens for ex in parse_examples(g.text)[0]]
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    dd = Deduplicator()
    dd.add([t[0] for t in texts])
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    verdicts = dd.check([c.question for c in cands], add=False)
    fresh = [c for c, v in zip(cands, verdicts) if not v.duplicate]
    t_dedup = time.perf_counter() - t0
    t0 = time.perf_counter()
    from prism_kernels.data import parse_fields

    fm = parse_fields("prompt=question,response=answer")
    cs = scorer.sketch_records([candidate_record(fm, c.question, c.answer, c.final_answer) for c in fresh])
    t_csk = time.perf_counter() - t0
    t0 = time.perf_counter()
    dec = SparseClusterFilter.from_clustering(cl).decide(cs.sketches.numpy()[cs.finite.numpy()])
    t_filter = time.perf_counter() - t0
    t0 = time.perf_counter()
    gv = pk.vendi_score(X)
    t_gv = time.perf_counter() - t0
    rows.append(("generate + parse (scripted, via the request cache)", f"{len(reqs)} requests -> {len(cands)}", t_gen))
    rows.append(("dedup: MinHash index of the pool", f"{len(texts)} questions", t_index))
    rows.append(("dedup: candidates vs pool and each other", f"{len(cands)} -> {len(fresh)} new", t_dedup))
    rows.append(("sketch candidates (Scorer)", f"{len(fresh)} rows", t_csk))
    rows.append(("filter: nearest centroid + live counts", f"{len(dec)} -> {sum(d.keep for d in dec)} kept", t_filter))
    rows.append(("pool G-Vendi (pk.vendi_score)", f"{gv:.2f}", t_gv))

    _print(f"One Prismatic round, GSM8K pool of {n}", rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
