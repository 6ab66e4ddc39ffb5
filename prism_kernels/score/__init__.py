"""G-Vendi scoring of datasets: the batch plan, the runner, the run directory (manifest, atomic shards,
resume), the summary (novelty, bootstrap), and the :class:`Scorer` API other pipelines call per batch.

    from prism_kernels.score import Scorer, score_dataset, load_run

Names are resolved lazily so that ``import prism_kernels.score`` stays light (torch, transformers,
pyarrow and rich are imported where used). docs/score.md documents the run directory.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Scorer": "scorer", "SketchBatch": "scorer",
    "score_dataset": "api", "ScoreResult": "api", "load_run": "api", "compare_runs": "api",
    "ScoreConfig": "config", "DEFAULT_MODEL": "config",
    "RunDir": "rundir", "atomic_write": "rundir",
    "ShardContext": "runner", "ShardResult": "runner", "run_shard": "runner", "run_local": "runner",
    "prepare_shard": "runner", "compute_shard": "runner", "write_shard": "runner",
    "cut_batches": "plan", "NOVELTY_LAMBDA": "finish", "BOOTSTRAP_RESAMPLES": "finish",
    "BOOTSTRAP_MIN_SHARDS": "finish",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
