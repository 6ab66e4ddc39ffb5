"""``prism synth prismatic``: the Prismatic Synthesis loop (Jung et al., 2025) on the kernels.

Per round: (re-)cluster the pool's gradient sketches (faiss spherical k-means, every C rounds) -> few-shot
prompts (seeds drawn uniformly from the pool, or from its sparse clusters) -> generations -> parse
(``### Question / ### Answer / ### <final_answer>``) -> exact and near-duplicate removal against the pool and
within the round -> sketch the candidates with the pool's proxy (:class:`prism_kernels.score.Scorer`) ->
:class:`SparseClusterFilter` (nearest cluster below the median size, accepted candidates counted in as they
are accepted) -> optional answer check (N solutions, strict majority, math-verify) -> add to the pool.

The pool is sketched by ``prism_kernels.score.score_dataset`` into ``RUN_DIR/pool_score`` (resumable), or a
finished ``prism score`` run is reused (``--score-run``). The run directory::

    RUN_DIR/config.json            the loop's identity (pool run, proxy, generator, options) and its hash
    RUN_DIR/manifest.json          finished rounds, the initial pool size and G-Vendi
    RUN_DIR/rounds/round-NNNNN.json         the round's record, its kept samples, every candidate's fate
    RUN_DIR/rounds/round-NNNNN.safetensors  the kept candidates' sketches, every new candidate's sketch (NaN
                                            when not sketched) and fate (0 kept, 1 filter, 2 answer check,
                                            3 unsketchable), the centroids and cluster counts after the round,
                                            the cluster of every pool row
    RUN_DIR/rounds.jsonl           one record per finished round (keys: round, pool_size, generated, parsed,
                                   duplicates, rejected_filter, rejected_answer_check, kept, pool_gvendi)
    RUN_DIR/synthetic.jsonl        the kept samples with provenance
    RUN_DIR/cache.sqlite           the generator's request cache (default; --cache)

A round is the unit of work: its files are written atomically and then recorded in the manifest; a run killed
mid-round redoes that round on restart, and the request cache answers the generations already made. The
round's randomness derives from (--synth-seed, round), so the redone round asks the same requests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.options import int_at_least, number_in

ROUND_KEYS = ("round", "pool_size", "generated", "parsed", "duplicates", "rejected_filter",
              "rejected_answer_check", "kept", "pool_gvendi")
FORMAT = "prism_kernels.synth.prismatic/1"
_FATES = ("kept", "filter", "answer_check", "unsketchable")  # candidate_fate codes in the round files
_FINAL = re.compile(r"\n?\s*####\s*(?P<final>[^\n]+?)\s*$")


def _error(msg: str):
    from ..data import DataError

    return DataError(msg)


# ------------------------------------------------------------------------------------------------ arguments


_positive = int_at_least(1)
_nonneg = int_at_least(0)
_fraction = number_in(0, 1, low_open=True)


def add_prismatic_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the options of ``prism synth prismatic`` to ``parser`` (for cli.py); returns it."""
    from ..score.config import DEFAULT_MODEL

    p = parser.add_argument_group("pool and run")
    p.add_argument("--pool", nargs="+", metavar="DATA", default=None,
                   help="the pool: JSONL / Parquet / CSV files or a datasets folder (as prism score)")
    p.add_argument("--score-run", metavar="RUN", default=None,
                   help="reuse a finished prism score run of the pool (its data, fields and proxy) instead of "
                        "scoring --pool")
    p.add_argument("--out", metavar="RUN_DIR", default=None, help="the run directory (required)")
    p.add_argument("--split", default=None, help="split of a HF dataset")
    p.add_argument("--fields", default=None, metavar="SPEC", help="field mapping of the pool (as prism score)")
    p.add_argument("--limit", type=_positive, default=None, metavar="N", help="only the first N pool rows")
    p.add_argument("--overwrite", action="store_true", help="delete the loop's files in RUN_DIR and start again")
    p.add_argument("--quiet", action="store_true", help="no per-round log lines")
    g = parser.add_argument_group("generator")
    g.add_argument("--generator", default=None, metavar="URL|local:PATH",
                   help="(required) an OpenAI-compatible server (http://host:8000/v1; key from $OPENAI_API_KEY) "
                        "or local:PATH")
    g.add_argument("--generator-model", default=None, help="the model name the server serves")
    g.add_argument("--cache", default=None, metavar="PATH",
                   help="SQLite request cache (default: RUN_DIR/cache.sqlite; several runs may share one)")
    g.add_argument("--concurrency", type=_positive, default=8, help="requests in flight (server; default 8)")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per request (server; default 120)")
    g.add_argument("--max-retries", type=_nonneg, default=6, help="retries on 429/5xx/timeouts (default 6)")
    g.add_argument("--temperature", type=float, default=1.0, help="generation temperature (default 1.0)")
    g.add_argument("--top-p", type=_fraction, default=1.0, help="nucleus mass (default 1.0)")
    g.add_argument("--max-tokens", type=_positive, default=1024, help="new tokens per generation (default 1024)")
    s = parser.add_argument_group("the loop")
    s.add_argument("--rounds", type=_positive, default=3, help="rounds (default 3)")
    s.add_argument("--per-round", type=_positive, default=64, metavar="N",
                   help="generation requests per round (default 64)")
    s.add_argument("--examples-per-prompt", type=_positive, default=1, help="new problems asked per request")
    s.add_argument("--shots", type=_positive, default=3, help="few-shot seeds per request (default 3)")
    s.add_argument("--seed-selection", choices=("uniform", "sparse"), default="uniform",
                   help="few-shot seeds drawn uniformly from the pool, or from its below-median clusters")
    s.add_argument("--cluster-ratio", type=_fraction, default=0.1, help="k = ratio x pool size (default 0.1)")
    s.add_argument("--kmeans-iters", type=_positive, default=20, help="k-means iterations (default 20)")
    s.add_argument("--kmeans-init", choices=("random", "kmeans++"), default="random",
                   help="faiss's seeding (k distinct rows at random, fixed seed) or faiss's k-means++ "
                        "(1.7x the time, slightly better objective; default random)")
    s.add_argument("--outlier-quantile", type=number_in(0, 1, high_open=True), default=0.0, metavar="Q",
                   help="also keep a candidate whose cosine to its nearest centroid is below the Q-quantile of the "
                        "pool rows' cosines to their own centroids: it opens a new cluster, which later "
                        "candidates fill up to the median (an extension for candidates unlike every cluster; "
                        "default 0: off, the paper's rule only)")
    s.add_argument("--recluster-every", type=_positive, default=1, metavar="C",
                   help="re-cluster the grown pool every C rounds (default 1)")
    s.add_argument("--answer-check", type=_nonneg, default=0, metavar="N",
                   help="solve each kept problem N times; keep it when more than N/2 agree with its answer "
                        "(default 0: off)")
    s.add_argument("--answer-temperature", type=float, default=0.7, help="temperature of the solutions")
    s.add_argument("--dedup-threshold", type=_fraction, default=0.7,
                   help="MinHash Jaccard of word 3-shingles at which a problem is a near-duplicate (0.7)")
    s.add_argument("--synth-seed", type=int, default=0, help="seed of the loop's sampling (default 0)")
    m = parser.add_argument_group("proxy (as prism score; ignored with --score-run)")
    m.add_argument("--model", default=DEFAULT_MODEL, help=f"proxy causal LM (default {DEFAULT_MODEL})")
    m.add_argument("--tokenizer", default=None)
    m.add_argument("--k", type=_positive, default=1024)
    m.add_argument("--kind", choices=("rademacher", "gaussian", "sparse", "kronecker"), default="rademacher")
    m.add_argument("--seed", type=int, default=0, help="projection seed")
    m.add_argument("--params", default="all")
    m.add_argument("--max-length", type=_positive, default=2048)
    m.add_argument("--batch-tokens", type=_positive, default=16384)
    m.add_argument("--shard-rows", type=_positive, default=1024)
    m.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    m.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    m.add_argument("--trust-remote-code", action="store_true")
    return parser


# ------------------------------------------------------------------------------------------------ the pool


@dataclass
class Pool:
    """The growing pool: sketches [n, k] float32 (raw), provenance ids [n], texts (question, answer, final)."""

    sketches: np.ndarray
    ids: list[str]
    texts: list[tuple[str, str, str]]

    def __len__(self) -> int:
        return len(self.ids)


def split_final(answer: str, record: dict | None = None) -> tuple[str, str]:
    """(worked answer, final answer) of a pool sample: a ``final_answer`` field when the record has one, else
    GSM8K's trailing ``#### X`` line, else the answer's last line."""
    if record is not None and isinstance(record.get("final_answer"), (str, int, float)) and \
            str(record["final_answer"]).strip():
        return answer.strip(), str(record["final_answer"]).strip()
    m = _FINAL.search(answer)
    if m:
        return answer[:m.start()].strip() or answer.strip(), m.group("final")
    lines = [ln for ln in answer.strip().splitlines() if ln.strip()]
    return answer.strip(), (lines[-1].strip() if lines else "")


def candidate_record(fieldmap, question: str, answer: str, final: str, final_in_response: bool = True) -> dict:
    """A record the pool's field map reads, holding a candidate, rendered as the pool's samples are: with
    ``final_in_response`` (GSM8K's convention, a pool whose responses end in ``#### X``) the response is the
    worked answer followed by ``#### final``; without it (a pool with a separate final-answer field, whose
    responses are the worked answers alone) the response is the worked answer. A candidate rendered
    unlike the pool would have a gradient unlike every pool sample's for that reason alone."""
    response = f"{answer.strip()}\n#### {final.strip()}" if final_in_response else answer.strip()
    if fieldmap.kind == "pair":
        return {fieldmap.prompt: question, fieldmap.response: response}
    if fieldmap.kind == "instruction":
        return {fieldmap.instruction: question, fieldmap.output: response}
    return {fieldmap.messages: [{"role": "user", "content": question}, {"role": "assistant", "content": response}]}


def load_score_run(run_dir) -> tuple[dict, np.ndarray, np.ndarray]:
    """A finished prism score run: ``(config.json, sketches [n, k] float32, row_id [n] int64)`` of the rows in
    its score, in row-id order."""
    from safetensors.numpy import load_file

    from ..score import load_run
    from ..score.rundir import RunDir

    load_run(run_dir)  # DataError unless finished
    run = RunDir(run_dir)
    cfg = run.read_config()
    shards = sorted(run.sketch_dir.glob("shard-*.safetensors"))
    parts = [load_file(str(p)) for p in shards]
    if not parts:
        raise _error(f"--score-run {run_dir}: no sketches/shard-*.safetensors")
    sketches = np.concatenate([p["sketches"] for p in parts]).astype(np.float32)
    row_id = np.concatenate([p["row_id"] for p in parts]).astype(np.int64)
    order = np.argsort(row_id, kind="stable")
    return cfg, sketches[order], row_id[order]


def pool_texts(cfg: dict, row_ids: np.ndarray) -> tuple[list[tuple[str, str, str]], object, bool]:
    """The (question, answer, final answer) of the scored rows ``row_ids`` [n] of a score run, read again
    from its data through its field map; also returns the FieldMap and whether the pool's responses carry
    their final answer as a ``#### X`` line (False when most records hold a separate ``final_answer``)."""
    from ..data import FieldMap, open_dataset

    ident = cfg["identity"]
    fm = FieldMap.from_json(ident["fields"])
    ds = open_dataset(ident["data"]["paths"], split=ident.get("split"))
    wanted = set(int(r) for r in row_ids)
    found: dict[int, tuple[str, str, str]] = {}
    separate_final = 0
    stop = int(max(wanted)) + 1 if wanted else 0
    for batch in ds.iter_records(0, stop):
        for rec in batch:
            if rec.row_id in wanted and rec.data is not None:
                sample = fm.extract(rec.data)
                question = next((m["content"] for m in reversed(sample.messages) if m.get("role") == "user"), "")
                answer, final = split_final(sample.response, rec.data)
                found[rec.row_id] = (str(question), answer, final)
                separate_final += answer == sample.response.strip() and _FINAL.search(sample.response) is None
    missing = [int(r) for r in row_ids if int(r) not in found]
    if missing:
        raise _error(f"pool: rows {missing[:5]} of the score run are no longer readable in "
                     f"{ident['data']['paths']} (the data changed?)")
    return [found[int(r)] for r in row_ids], fm, separate_final * 2 <= len(found)


# ------------------------------------------------------------------------------------------------ the run


def _config_identity(args, pool_cfg: dict, generator_id: str) -> dict:
    return {
        "format": FORMAT,
        "pool_run": pool_cfg.get("config_hash"),
        "generator": generator_id,
        **{k: getattr(args, k) for k in ("per_round", "examples_per_prompt", "shots", "seed_selection",
                                          "cluster_ratio", "kmeans_iters", "kmeans_init", "recluster_every",
                                          "outlier_quantile",
                                          "answer_check", "answer_temperature", "dedup_threshold", "synth_seed",
                                          "temperature", "top_p", "max_tokens")},
    }


class PrismaticRun:
    """One run directory of the loop (see the module docstring). ``run()`` does the missing rounds.

    Args:
        args: the parsed options of :func:`add_prismatic_arguments` (an ``argparse.Namespace``).
        generator: a :class:`prism_kernels.synth.Generator` (default: from ``--generator``).
        scorer: a :class:`prism_kernels.score.Scorer` for the candidates (default: the pool run's proxy).
        log: called with each log line (default: print to stderr unless --quiet).
    """

    def __init__(self, args, generator=None, scorer=None, log=None):
        if not getattr(args, "out", None):
            raise _error("give the run directory: --out RUN_DIR")
        if generator is None and not getattr(args, "generator", None):
            raise _error("give the generator: --generator http://HOST:PORT/v1 --generator-model NAME, or "
                         "--generator local:PATH")
        self.args = args
        self.out = Path(args.out)
        self.rounds_dir = self.out / "rounds"
        self.log = log or ((lambda s: None) if getattr(args, "quiet", False)
                           else (lambda s: print(s, file=sys.stderr, flush=True)))
        self._generator, self._scorer = generator, scorer

    # -- setup -----------------------------------------------------------------------------------------
    def _pool_run(self) -> Path:
        a = self.args
        if a.score_run:
            return Path(a.score_run)
        if not a.pool:
            raise _error("give the pool: --pool DATA... (scored into RUN_DIR/pool_score) or --score-run RUN")
        from ..score import score_dataset

        target = self.out / "pool_score"
        t0 = time.perf_counter()
        score_dataset(a.pool, target, model=a.model, tokenizer=a.tokenizer, k=a.k, kind=a.kind, seed=a.seed,
                      params=a.params, max_length=a.max_length, batch_tokens=a.batch_tokens,
                      shard_rows=a.shard_rows, limit=a.limit, split=a.split, fields=a.fields, device=a.device,
                      dtype=a.dtype, trust_remote_code=a.trust_remote_code, progress=False if a.quiet else None)
        self.timings["pool_sketch_s"] = time.perf_counter() - t0
        return target

    def _make_generator(self):
        if self._generator is None:
            from .generators import generator_from_cli

            a = self.args
            cache = a.cache or (self.out / "cache.sqlite")
            self._generator = generator_from_cli(a.generator, a.generator_model, cache, concurrency=a.concurrency,
                                                 timeout=a.timeout, max_retries=a.max_retries)
        return self._generator

    def _make_scorer(self, pool_cfg: dict):
        if self._scorer is None:
            from ..score import Scorer
            from ..score.config import ScoreConfig

            c = ScoreConfig.from_json(pool_cfg)
            self._scorer = Scorer(c.model, tokenizer=c.tokenizer, k=c.k, kind=c.kind, seed=c.seed,
                                  fields=c.fields, params=c.params, max_length=c.max_length,
                                  device=getattr(self.args, "device", "auto"), dtype=c.dtype,
                                  batch_tokens=c.batch_tokens, trust_remote_code=c.trust_remote_code)
        return self._scorer

    def _manifest(self) -> dict:
        path = self.out / "manifest.json"
        if path.exists():
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        return {"format": FORMAT, "rounds": []}

    def _round_path(self, r: int, ext: str) -> Path:
        return self.rounds_dir / f"round-{r:05d}.{ext}"

    # -- the loop --------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Runs the missing rounds (holding the run directory's lock); returns the manifest (finished rounds,
        initial G-Vendi). DataError when another process works in the same run directory."""
        from ..score.rundir import lock_directory

        lock = lock_directory(self.out, "prism synth prismatic")
        try:
            return self._run_locked()
        finally:
            lock.close()

    def _run_locked(self) -> dict:
        import prism_kernels as pk

        from ..score.rundir import write_json
        from .cluster import spherical_kmeans
        from .dedup import Deduplicator

        a = self.args
        self.timings: dict = {}
        self.out.mkdir(parents=True, exist_ok=True)
        if a.overwrite:
            self._clear()
        pool_run = self._pool_run()
        pool_cfg, sketches, row_ids = load_score_run(pool_run)
        texts, self.fieldmap, self.final_in_response = pool_texts(pool_cfg, row_ids)
        generator = self._make_generator()
        identity = _config_identity(a, pool_cfg, generator.model_id)
        from ..score.rundir import config_hash

        chash = config_hash(identity)
        cfg_path = self.out / "config.json"
        if cfg_path.exists():
            with open(cfg_path, encoding="utf-8") as f:
                stored = json.load(f)
            if stored.get("config_hash") != chash:
                diffs = [k for k in identity if stored.get("identity", {}).get(k) != identity[k]]
                raise _error(f"{self.out} holds a Prismatic run with other settings ({', '.join(diffs)}); pass "
                             "--overwrite to start again, or another --out")
        else:
            write_json(cfg_path, {"format": FORMAT, "config_hash": chash, "identity": identity,
                                  "pool_run": str(pool_run)})

        pool = Pool(sketches, [f"pool:{int(r)}" for r in row_ids], texts)
        manifest = self._manifest()
        done = [int(r) for r in manifest["rounds"]]
        assignment = centroids = counts = None
        for r in done:  # replay finished rounds: their kept samples rejoin the pool
            rec, kept, state = self._read_round(r)
            if kept:
                pool.sketches = np.concatenate([pool.sketches, state["kept_sketches"]])
                pool.ids += [k["id"] for k in kept]
                pool.texts += [(k["question"], k["answer"], k["final_answer"]) for k in kept]
            centroids, counts, assignment = state["centroids"], state["counts"], state["assignment"]
        if "initial_pool_gvendi" not in manifest:
            manifest["initial_pool_size"] = len(pool)
            manifest["initial_pool_gvendi"] = float(pk.vendi_score(sketches))
            write_json(self.out / "manifest.json", manifest)
        self.log(f"prismatic: pool {len(pool)} samples, G-Vendi {manifest['initial_pool_gvendi']:.3f}"
                 + (f"; resuming after round {done[-1]}" if done else ""))

        vendi = pk.VendiState(pool.sketches.shape[1])
        vendi.update(pool.sketches)
        dedup = Deduplicator(threshold=a.dedup_threshold)
        dedup.add([t[0] for t in pool.texts], pool.ids)
        scorer = self._make_scorer(pool_cfg)

        for r in range(len(done) + 1, a.rounds + 1):
            t_round = time.perf_counter()
            tm: dict = {}
            if centroids is None or (r - 1) % a.recluster_every == 0:
                t0 = time.perf_counter()
                cl = spherical_kmeans(pool.sketches, ratio=a.cluster_ratio, niter=a.kmeans_iters,
                                      seed=a.synth_seed + r, init=a.kmeans_init)
                centroids, counts, assignment = cl.centroids, cl.sizes.copy(), cl.assignment.copy()
                tm["cluster_s"] = time.perf_counter() - t0
            rec, kept, kept_sketches, decisions_log = self._round(
                r, pool, centroids, counts, assignment, generator, scorer, dedup, tm)
            # add to the pool
            if kept:
                pool.sketches = np.concatenate([pool.sketches, kept_sketches])
                pool.ids += [k["id"] for k in kept]
                pool.texts += [(k["question"], k["answer"], k["final_answer"]) for k in kept]
                vendi.update(kept_sketches)
                assignment = np.concatenate([assignment, np.array([k["cluster"] for k in kept], np.int64)])
            centroids = self._centroids
            counts = np.bincount(assignment, minlength=len(centroids)).astype(np.int64)
            rec["pool_size"] = len(pool)
            rec["pool_gvendi"] = float(vendi.score(1))
            tm["round_s"] = time.perf_counter() - t_round
            self._write_round(r, rec, kept, decisions_log, kept_sketches, centroids, counts, assignment, tm)
            manifest["rounds"] = sorted(set(manifest["rounds"]) | {r})
            write_json(self.out / "manifest.json", manifest)
            self._write_outputs(manifest["rounds"])
            self.log(f"round {r}/{a.rounds}: generated {rec['generated']}, parsed {rec['parsed']} "
                     f"(unparsable {decisions_log['unparsable']}), duplicates {rec['duplicates']}, "
                     f"rejected by the filter {rec['rejected_filter']}"
                     + (f" (outliers kept {decisions_log['outliers_kept']})" if a.outlier_quantile > 0 else "")
                     + ", by the answer check "
                     f"{rec['rejected_answer_check']}, kept {rec['kept']} -> pool {rec['pool_size']}, "
                     f"G-Vendi {rec['pool_gvendi']:.3f} ({tm['round_s']:.1f} s)")
            self.timings[f"round_{r}"] = tm
        return manifest

    def _round(self, r, pool: Pool, centroids, counts, assignment, generator, scorer, dedup, tm):
        """One round on the current clustering. Returns (record, kept samples, kept sketches [m, k], log)."""
        from .answers import majority_vote
        from .cluster import SparseClusterFilter
        from .format import Example, parse_examples
        from .generators import GenerationRequest
        from .prompts import parse_solution, prismatic_generation_messages, prismatic_solution_messages

        a = self.args
        rng = np.random.default_rng([a.synth_seed, r])
        # few-shot seeds
        if a.seed_selection == "sparse":
            median = float(np.median(counts))
            members = np.flatnonzero(counts[assignment] < median)
            if len(members) < a.shots:
                members = np.arange(len(pool))
        else:
            members = np.arange(len(pool))
        requests, seeds_of = [], []
        for i in range(a.per_round):
            pick = rng.choice(members, size=min(a.shots, len(members)), replace=False)
            seeds_of.append([pool.ids[j] for j in pick])
            shots = [Example(*pool.texts[j]) for j in pick if all(s.strip() for s in pool.texts[j])]
            requests.append(GenerationRequest(
                messages=tuple(prismatic_generation_messages(shots, a.examples_per_prompt)),
                temperature=a.temperature, top_p=a.top_p, max_tokens=a.max_tokens,
                seed=int(rng.integers(0, 2**31 - 1)), sample_index=0))
        t0 = time.perf_counter()
        gens = self._generate(generator, requests, f"round {r}: generate")
        tm["generate_s"] = time.perf_counter() - t0
        # parse
        cands, unparsable = [], 0
        for i, g in enumerate(gens):
            examples, bad = parse_examples(g.text or "")
            unparsable += bad + (0 if examples or bad else 1)  # an empty / shapeless reply counts once
            for ex in examples:
                cands.append({"question": ex.question, "answer": ex.answer, "final_answer": ex.final_answer,
                              "seeds": seeds_of[i], "request": i})
        # dedup against the pool and within the round
        t0 = time.perf_counter()
        verdicts = dedup.check([c["question"] for c in cands], [f"r{r}-c{j}" for j in range(len(cands))],
                               add=False)
        fresh = [c for c, v in zip(cands, verdicts) if not v.duplicate]
        duplicates = len(cands) - len(fresh)
        tm["dedup_s"] = time.perf_counter() - t0
        # sketch
        t0 = time.perf_counter()
        if fresh:
            out = scorer.sketch_records([candidate_record(self.fieldmap, c["question"], c["answer"],
                                                          c["final_answer"], self.final_in_response)
                                         for c in fresh])
            sk = out.sketches.numpy().astype(np.float32)
            finite = out.finite.numpy()
        else:
            sk, finite = np.zeros((0, pool.sketches.shape[1]), np.float32), np.zeros(0, bool)
        tm["sketch_s"] = time.perf_counter() - t0
        # filter (live counting)
        t0 = time.perf_counter()
        cutoff = None
        if a.outlier_quantile > 0:
            from .cluster import assign, outlier_cutoff

            cutoff = outlier_cutoff(assign(centroids, pool.sketches)[1], a.outlier_quantile)
        filt = SparseClusterFilter(centroids, counts, outlier_similarity=cutoff)
        live = np.flatnonzero(finite)
        decisions = dict(zip(live.tolist(), filt.decide(sk[live]) if len(live) else []))
        passed = [j for j in live.tolist() if decisions[j].keep]
        tm["filter_s"] = time.perf_counter() - t0
        # answer check
        votes: dict[int, object] = {}
        rejected_answer = 0
        if a.answer_check and passed:
            t0 = time.perf_counter()
            n = a.answer_check
            reqs = []
            for j in passed:
                base = GenerationRequest(messages=tuple(prismatic_solution_messages(fresh[j]["question"])),
                                         temperature=a.answer_temperature, top_p=a.top_p, max_tokens=a.max_tokens,
                                         seed=a.synth_seed)
                reqs.extend(base.samples(n))
            sols = self._generate(generator, reqs, f"round {r}: answer check")
            for q, j in enumerate(passed):
                answers = [parse_solution(fresh[j]["question"], g.text or "") for g in sols[q * n:(q + 1) * n]]
                votes[j] = majority_vote(answers, reference=fresh[j]["final_answer"])
                if not votes[j].keep:
                    filt.release(decisions[j])
                    rejected_answer += 1
            tm["answer_check_s"] = time.perf_counter() - t0
        kept, kept_rows, fates = [], [], []
        for j, c in enumerate(fresh):
            d = decisions.get(j)
            v = votes.get(j)
            fate = ("unsketchable" if d is None else "filter" if not d.keep else
                    "answer_check" if v is not None and not v.keep else "kept")
            fates.append({"request": c["request"], "fate": fate, **(d.to_json() if d else {}),
                          **({"vote": v.to_json()} if v is not None else {})})
            if fate != "kept":
                continue
            kept_rows.append(j)
            kept.append({"id": f"r{r}-{len(kept)}", "question": c["question"], "answer": c["answer"],
                         "final_answer": c["final_answer"], "round": r, "seeds": c["seeds"],
                         "cluster": d.cluster, "cluster_size": d.size_at_decision,
                         "cluster_size_before": d.size_before, "cluster_similarity": round(d.similarity, 6),
                         "generator": generator.model_id,
                         "answer_agreement": None if v is None else round(v.agreement, 6)})
        dedup.check([k["question"] for k in kept], [k["id"] for k in kept], add=True)  # later rounds see them
        rejected_filter = len(fresh) - len(passed)
        rec = {"round": r, "pool_size": None, "generated": len(gens), "parsed": len(cands),
               "duplicates": duplicates, "rejected_filter": rejected_filter,
               "rejected_answer_check": rejected_answer, "kept": len(kept), "pool_gvendi": None}
        log = {"unparsable": unparsable, "unsketchable": int(len(fresh) - len(live)),
               "threshold": float(filt.threshold), "outlier_cutoff": cutoff,
               "outliers_kept": sum(1 for j in kept_rows if decisions[j].outlier), "candidates": fates,
               "duplicate_of": [{"candidate": j, "kind": v.kind, "match": v.match, "jaccard": round(v.jaccard, 4)}
                                for j, v in enumerate(verdicts) if v.duplicate]}
        self._candidates = (sk, np.array([_FATES.index(f["fate"]) for f in fates], np.int8))
        self._centroids = filt.centroids  # with the clusters that outliers opened
        return rec, kept, sk[kept_rows] if kept_rows else np.zeros((0, sk.shape[1]), np.float32), log

    def _generate(self, generator, requests, label: str):
        """``generator.generate(requests)`` with a progress bar (count, requests/s, ETA) on a terminal, unless
        --quiet."""
        from ..score.report import Progress

        shown = not getattr(self.args, "quiet", False) and sys.stderr.isatty()
        with Progress(shown, unit="requests") as bars:
            bars.add("generate", label, len(requests))
            return generator.generate(requests, progress=bars.callback("generate"))

    # -- files -------------------------------------------------------------------------------------------
    def _write_round(self, r, rec, kept, log, kept_sketches, centroids, counts, assignment, tm):
        from safetensors.numpy import save_file

        from ..score.rundir import atomic_write, write_json

        cand, fate = self._candidates
        atomic_write(self._round_path(r, "safetensors"), lambda tmp: save_file({
            "kept_sketches": np.ascontiguousarray(kept_sketches, dtype=np.float32),
            "candidate_sketches": np.ascontiguousarray(cand, dtype=np.float32),
            "candidate_fate": fate,
            "centroids": np.ascontiguousarray(centroids, dtype=np.float32),
            "counts": np.ascontiguousarray(counts, dtype=np.int64),
            "assignment": np.ascontiguousarray(assignment, dtype=np.int64)}, tmp))
        write_json(self._round_path(r, "json"), {"record": rec, "kept": kept, "log": log, "timings": tm})

    def _read_round(self, r):
        from safetensors.numpy import load_file

        with open(self._round_path(r, "json"), encoding="utf-8") as f:
            data = json.load(f)
        return data["record"], data["kept"], load_file(str(self._round_path(r, "safetensors")))

    def _write_outputs(self, rounds):
        from ..score.rundir import atomic_write

        recs, samples = [], []
        for r in rounds:
            with open(self._round_path(r, "json"), encoding="utf-8") as f:
                data = json.load(f)
            recs.append({k: data["record"][k] for k in ROUND_KEYS})
            samples.extend(data["kept"])
        atomic_write(self.out / "rounds.jsonl", "".join(json.dumps(x) + "\n" for x in recs))
        atomic_write(self.out / "synthetic.jsonl", "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in samples))

    def _clear(self):
        import shutil

        for name in ("config.json", "manifest.json", "rounds.jsonl", "synthetic.jsonl"):
            (self.out / name).unlink(missing_ok=True)
        shutil.rmtree(self.rounds_dir, ignore_errors=True)


def run_prismatic(args, generator=None, scorer=None) -> int:
    """``prism synth prismatic``: runs (or resumes) the loop of ``args`` (:func:`add_prismatic_arguments`).
    Returns the exit status (0). User mistakes raise prism_kernels.data.DataError."""
    PrismaticRun(args, generator=generator, scorer=scorer).run()
    return 0


def main(argv=None) -> int:
    """``python -m prism_kernels.synth.prismatic ...`` (the same options as ``prism synth prismatic``)."""
    from ..data import DataError
    from .generators import GeneratorError

    parser = add_prismatic_arguments(argparse.ArgumentParser(prog="prism synth prismatic",
                                                             description=__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return run_prismatic(args)
    except DataError as exc:
        print(f"prism: error: {exc}", file=sys.stderr)
        return 2
    except GeneratorError as exc:  # e.g. a server that stays down: the finished rounds are kept, rerun resumes
        print(f"prism: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())


# ------------------------------------------------------------------------------------------------ evaluation


def compare_with_random_acceptance(run_dir, draws: int = 10, seed: int = 0) -> dict:
    """How a finished Prismatic run compares with accepting as many candidates at random.

    Every round file keeps the sketches of all new candidates and their fates, so the baseline draws, round by
    round, as many of that round's sketched candidates as the loop kept (uniformly, without replacement) and
    adds them to the initial pool; ``draws`` such selections, seeded by ``seed``.

    Returns ``{"initial", "loop", "random": [draws floats], "random_mean", "random_max", "beats",
    "kept_per_round"}``: G-Vendi (q = 1) of the initial pool, of the loop's final pool, of each random
    selection, and in how many draws the loop's pool scored higher.
    """
    import prism_kernels as pk
    from safetensors.numpy import load_file

    run = Path(run_dir)
    manifest_path = run / "manifest.json"
    if not manifest_path.exists():
        raise _error(f"{run}: no manifest.json; not a Prismatic run directory")
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    with open(run / "config.json", encoding="utf-8") as f:
        pool_run = json.load(f)["pool_run"]
    if not Path(pool_run).exists() and (run / "pool_score").exists():  # a relative path from another cwd
        pool_run = run / "pool_score"
    _, base, _ = load_score_run(pool_run)
    rounds = [load_file(str(run / "rounds" / f"round-{r:05d}.safetensors")) for r in manifest["rounds"]]
    loop = float(pk.vendi_score(np.concatenate([base] + [f["kept_sketches"] for f in rounds])))
    sketched = [np.flatnonzero(f["candidate_fate"] != _FATES.index("unsketchable")) for f in rounds]
    kept = [int((f["candidate_fate"] == _FATES.index("kept")).sum()) for f in rounds]
    scores = []
    for t in range(int(draws)):
        rng = np.random.default_rng([seed, t])
        picked = [base] + [f["candidate_sketches"][rng.choice(rows, n, replace=False)]
                           for f, rows, n in zip(rounds, sketched, kept)]
        scores.append(float(pk.vendi_score(np.concatenate(picked))))
    return {"initial": float(manifest["initial_pool_gvendi"]), "loop": loop, "random": scores,
            "random_mean": float(np.mean(scores)) if scores else float("nan"),
            "random_max": max(scores) if scores else float("nan"), "beats": sum(loop > s for s in scores),
            "kept_per_round": kept}
