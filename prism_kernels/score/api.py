"""``score_dataset``: the job behind ``prism score`` (plan, sketch, finish), and reading finished runs."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .config import ScoreConfig, diff_identity, resolve_device
from .rundir import RunDir, write_json

SUMMARY_FORMAT = "prism_kernels.score.summary/1"


def _error(msg: str):
    from ..data import DataError

    return DataError(msg)


@dataclass
class ScoreResult:
    """A finished run: its directory and its summary.json (``summary["gvendi"]["q1"]`` etc.)."""

    run_dir: Path
    summary: dict

    @property
    def gvendi(self) -> dict:
        return self.summary["gvendi"]


def load_run(run_dir) -> ScoreResult:
    """Reads a finished run (summary.json); DataError when the folder holds no finished run."""
    run = RunDir(run_dir)
    if not run.summary_path.exists():
        why = "an unfinished run (rerun its prism score command)" if run.config_path.exists() else "no run"
        raise _error(f"{run_dir}: holds {why}: no summary.json")
    with open(run.summary_path, encoding="utf-8") as f:
        return ScoreResult(run.root, json.load(f))


def compare_runs(run_dirs: Sequence) -> list[dict]:
    """Finished runs ranked by G-Vendi q = 1, highest first: ``[{"run", "summary"}]`` (nothing recomputed)."""
    rows = [{"run": str(d), "summary": load_run(d).summary} for d in run_dirs]
    return sorted(rows, key=lambda r: -r["summary"]["gvendi"]["q1"])


def _ray_engine():
    name = "prism_kernels.distributed.ray_engine"
    try:
        found = importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise _error("--engine ray: prism_kernels.distributed.ray_engine is not available in this installation "
                     "(use --engine local)")
    return importlib.import_module(name)


def _fieldmap_for(cfg: ScoreConfig, dataset):
    from ..data import FieldMap, detect_fields, parse_fields

    columns = dataset.columns()
    if not columns and dataset.count() == 0:
        names = ", ".join(str(s.path) for s in dataset.sources)
        raise _error(f"DATA: no records in {names} (empty dataset)")
    if cfg.fields is None:
        fm = detect_fields(columns)
    elif isinstance(cfg.fields, dict):
        fm = FieldMap.from_json(cfg.fields)
    elif isinstance(cfg.fields, FieldMap):
        fm = cfg.fields
    else:
        fm = parse_fields(cfg.fields)
    if hasattr(fm, "check_columns"):
        fm.check_columns(columns)
    return fm


def score_dataset(paths, out_dir, *, config: ScoreConfig | None = None, overwrite: bool = False,
                  progress: bool | None = None, console=None, print_result: bool = False,
                  on_event: Callable[[str], None] | None = None, **options) -> ScoreResult:
    """Scores a dataset into a run directory (resumable). ``prism score`` calls this.

    Args:
        paths: input files / folders / HF ids, scored as one dataset.
        out_dir: the run directory (created; a run already there is resumed when its config matches,
            refused naming what differs otherwise).
        config: a :class:`ScoreConfig` (its ``data`` is replaced by ``paths``), or keyword ``options`` with
            the same names (model=, k=, kind=, seed=, params=, max_length=, batch_tokens=, shard_rows=,
            limit=, split=, fields=, on_bad_record=, device=, dtype=, trust_remote_code=, engine=, workers=,
            gpus_per_worker=, address=, tokenizer=).
        overwrite: delete the run's files in out_dir first.
        progress: rich progress bars (default: when stderr is a terminal).
        print_result: print the rich summary at the end.
        on_event: called with short messages ("planned", "shard 3 done", ...), e.g. for logging.

    Returns: :class:`ScoreResult` (summary.json's content).

    Raises: prism_kernels.data.DataError for user mistakes (one line naming the file / field / option).
    """
    from rich.console import Console

    from ..data import open_dataset
    from .proxy import load_tokenizer, model_identity, resolve_model_dir

    t_start = time.perf_counter()
    say = on_event or (lambda msg: None)
    cfg = (config.replace(**options) if config is not None else ScoreConfig(data=list(paths), **options))
    cfg.data = [os.fspath(p) for p in paths]
    cfg.validate()
    cfg.device, cfg.dtype = resolve_device(cfg.device, cfg.dtype, gpus_per_worker=cfg.gpus_per_worker,
                                           local=cfg.engine == "local")
    console = console or Console(stderr=True)
    if progress is None:
        progress = console.is_terminal

    dataset = open_dataset(cfg.data, split=cfg.split)
    model_dir = resolve_model_dir(cfg.model)
    tokenizer = load_tokenizer(cfg.tokenizer or model_dir, cfg.trust_remote_code)
    fieldmap = _fieldmap_for(cfg, dataset)
    cfg.fields = fieldmap.to_json()
    cfg.data_identity = dataset.identity()
    cfg.model_identity = model_identity(model_dir)
    chash = cfg.hash()

    run = RunDir(out_dir)
    lock = run.lock()  # one process per run directory; released when this one ends, however it ends
    try:
        return _score_locked(run, cfg, dataset, tokenizer, fieldmap, chash, overwrite, progress, console,
                             print_result, say, t_start)
    finally:
        lock.close()


def _score_locked(run, cfg, dataset, tokenizer, fieldmap, chash, overwrite, progress, console, print_result, say,
                  t_start):
    from rich.markup import escape

    from ..data import Renderer
    from .finish import BOOTSTRAP_RESAMPLES, NOVELTY_LAMBDA, finish
    from .plan import build_plan, read_plan_info
    from .report import Progress, print_summary
    from .runner import ShardContext, run_local

    out_dir = run.root
    stored = run.read_config()
    if stored is not None and overwrite:
        run.clear()
        stored = None
    if stored is not None and stored.get("config_hash") != chash and not run.done_shards():
        run.clear()  # nothing sketched yet: nothing to protect, start with the new configuration
        stored = None
    if stored is not None and stored.get("config_hash") != chash:
        diffs = diff_identity(stored.get("identity", {}), cfg.identity()) or ["the configuration format"]
        raise _error(f"{out_dir} holds a run with another configuration ({'; '.join(diffs)}); "
                     f"pass --overwrite to start again, or another --out")
    if stored is None:
        if run.root.exists() and (run.manifest_path.exists() or run.sketch_dir.exists()):
            run.clear()  # leftovers of a run whose config.json never landed
        run.root.mkdir(parents=True, exist_ok=True)
        run.write_config(cfg.to_json())

    run.remove_stale_tmp()  # halves of files a kill -9 interrupted
    renderer = Renderer(tokenizer, cfg.max_length)
    with Progress(bool(progress), console) as bars:
        if not run.plan_path.exists():
            total = None
            try:
                total = dataset.count()  # one streaming pass (cached by the dataset), for the bar's ETA
                total = min(total, cfg.limit) if cfg.limit else total
            except Exception:  # noqa: BLE001 - count is only for the bar
                total = None
            bars.add("plan", "plan  ", total)
            build_plan(run.plan_path, dataset, fieldmap, renderer, shard_rows=cfg.shard_rows,
                       batch_tokens=cfg.batch_tokens, limit=cfg.limit, on_bad_record=cfg.on_bad_record,
                       on_rows=lambda n: bars.advance("plan", n))
        info = read_plan_info(run.plan_path)
        say(f"planned {info.n_rows} rows in {len(info.shards)} shards, {info.n_batches} batches")
        for msg in info.bad_examples:
            console.print(f"[yellow]prism: warning:[/yellow] {escape(msg)}", highlight=False, soft_wrap=True)
        if sum(info.skipped.values()) > len(info.bad_examples):
            console.print(f"[yellow]prism: warning:[/yellow] {sum(info.skipped.values())} rows skipped in all "
                          f"({', '.join(f'{k}: {v}' for k, v in info.skipped.items())})",
                          highlight=False, soft_wrap=True)
        shard_ids = list(range(len(info.shards)))
        done = run.done_shards(chash)
        todo = [s for s in shard_ids if s not in done]
        rows_done = sum(info.shards[s][1] - info.shards[s][0] for s in done)
        if done and (progress or print_result):
            console.print(f"resuming {escape(str(out_dir))}: {len(done)} of {len(shard_ids)} shards "
                          f"({rows_done:,} rows) already done", highlight=False, soft_wrap=True)
        sketched_now = 0
        timing = None
        t_sketch = time.perf_counter()
        if todo:
            def record(result):  # a ShardResult, or its to_json() dict (e.g. from a Ray actor)
                entry = result if isinstance(result, dict) else result.to_json()
                run.record_shard(entry, chash)
                say(f"shard {entry['shard']} done")

            bars.add("sketch", "sketch", info.n_rows, completed=rows_done)
            if cfg.engine == "local":
                ctx = ShardContext.from_run_dir(run.root, device=cfg.device, dataset=dataset)
                timing = run_local(ctx, todo, record, on_rows=lambda n: bars.advance("sketch", n))
            else:
                engine = _ray_engine()
                engine.run(run.root, todo, workers=cfg.workers, gpus_per_worker=cfg.gpus_per_worker,
                           address=cfg.address, device=cfg.device, on_done=record,
                           on_rows=lambda n: bars.advance("sketch", n))
            sketched_now = sum(info.shards[s][1] - info.shards[s][0] for s in todo)
        sketch_s = time.perf_counter() - t_sketch

    done = run.done_shards(chash)
    missing = [s for s in shard_ids if s not in done]
    if missing:
        raise RuntimeError(f"shards {missing[:5]} were not completed by the {cfg.engine} engine")
    result = finish(run, shard_ids, cfg.k, cfg.seed)

    skipped = dict(info.skipped)
    for entry in done.values():
        for reason, c in entry.get("skipped", {}).items():
            if reason not in info.skipped:
                skipped[reason] = skipped.get(reason, 0) + c
    sketch_meta = _sketch_meta(run, shard_ids)
    seconds = time.perf_counter() - t_start
    if sketched_now:
        rate = sketched_now / max(sketch_s, 1e-9)
    else:
        total_s = sum(e.get("seconds", 0.0) for e in done.values())
        rate = info.n_rows / total_s if total_s > 0 else 0.0
    summary = {
        "format": SUMMARY_FORMAT,
        "n": result["n"],
        "rows": info.n_rows,
        "skipped": dict(sorted(skipped.items())),
        "truncated": info.truncated,
        "gvendi": result["gvendi"],
        "ci95": result["ci95"],
        "ci95_note": result["ci95_note"],
        "novelty_lambda": NOVELTY_LAMBDA,
        "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
        "shards": len(shard_ids),
        "config": cfg.identity(),
        "config_hash": chash,
        "sketch_meta": sketch_meta,
        "seconds": seconds,
        "samples_per_s": rate,
        "timing": None if timing is None else timing.to_json(),
    }
    write_json(run.summary_path, summary)
    from ..plots.spectrum import plot_spectrum

    plot_spectrum(result["spectrum"], result["gvendi"], run.spectrum_path, label=run.root.name,
                  ci95=result["ci95"]["q1"])
    if print_result:
        print_summary(summary, run.root, console)
    return ScoreResult(run.root, summary)


def _sketch_meta(run: RunDir, shard_ids) -> dict:
    from safetensors import safe_open

    with safe_open(str(run.shard_path(shard_ids[0])), framework="pt") as f:
        return json.loads(f.metadata()["sketch_meta"])
