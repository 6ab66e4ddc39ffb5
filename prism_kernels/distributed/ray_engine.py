"""The Ray engine of ``prism score --engine ray``: the planned shards run in a Ray Data actor pool.

The plan, the shard files and the manifest are the local engine's (:mod:`prism_kernels.score.runner`);
only where ``run_shard`` runs changes::

    ray.data.from_items([{"shard": s} for s in todo])         # one block per shard
      .map_batches(ShardWorker, batch_size=1,                 # one actor = one loaded proxy
                   compute=ActorPoolStrategy(size=N),         # (= concurrency=N)
                   num_cpus=<a share of the CPUs>, num_gpus=G)
      .iter_rows()                                            # the driver, as shards finish:
                                                              #   on_done(result) -> manifest.json

Each :class:`ShardWorker` actor opens the run directory once (``ShardContext.from_run_dir``: config, data,
proxy) and calls ``run_shard`` per shard, which writes the shard's two files atomically from the actor.
The driver alone records finished shards in the manifest, so resume works as with the local engine: a
shard whose files were written but not recorded when the driver died is simply run again (same files,
same contents). The run directory and the input files must be on a filesystem every node sees at the
same path (NFS, a cluster file system, or one machine); relative paths in the run's config are resolved
against the driver's working directory, which each actor enters when it exists on its node.

Per-sample sketches do not depend on the process that computed them, so the merged summary equals the
local engine's (same plan, same shards). docs/ray.md has the cluster command.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

#: environment variables forwarded to a remote cluster's workers (a local instance inherits them all)
FORWARDED_ENV_PREFIXES = ("HF_", "TRANSFORMERS_", "PRISM_")


def _error(msg: str):
    from ..data import DataError

    return DataError(msg)


class ShardWorker:
    """The Ray Data callable class: one instance per actor, holding one
    :class:`~prism_kernels.score.runner.ShardContext` (the run's config, its dataset and one loaded proxy).

    Args:
        run_dir: absolute path of the planned run directory (config.json + plan.parquet), on a shared
            filesystem.
        device: the proxy's device in this actor ("cpu" / "cuda"; None: the run's config).
        threads: torch intra-op threads for this actor (its share of the node's cores); None: unchanged.
        cwd: the driver's working directory, entered when it exists here (relative data/model paths).
    """

    def __init__(self, run_dir: str, device: str | None = None, threads: int | None = None,
                 cwd: str | None = None):
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        from ..data import DataError
        from ..score.runner import ShardContext

        self.context, self.error = None, None
        try:
            self.context = ShardContext.from_run_dir(run_dir, device=device)
        except DataError as exc:
            # A user mistake (data or model not found on this node, ...): reported with each shard. Raised
            # here, Ray Data would retry the actor and then report an ActorDiedError with the traceback as text.
            self.error = str(exc)

    def __call__(self, batch: dict) -> dict:
        """Runs the shards of one batch (``batch_size=1``: one shard).

        Args:
            batch: ``{"shard": [b] int64}``.

        Returns: ``{"shard": [b] int64, "result": [b] str, "error": [b] str}``: each result a ``ShardResult``
        as JSON (the shard's files are already written, atomically, when it is returned), or "" and the
        one-line message of the user mistake (a DataError) that stopped the shard. A DataError travels as
        data because Ray Data wraps exceptions from a UDF into a UserCodeException that keeps only the text.
        Any other exception is raised (the run stops with Ray's error).
        """
        import numpy as np

        from ..data import DataError
        from ..score.runner import run_shard

        shards = [int(s) for s in batch["shard"]]
        results, errors = [], []
        for s in shards:
            try:
                if self.error is not None:
                    raise DataError(self.error)
                results.append(json.dumps(run_shard(self.context, s).to_json()))
                errors.append("")
            except DataError as exc:
                results.append("")
                errors.append(str(exc) or type(exc).__name__)
        return {"shard": np.asarray(shards, dtype=np.int64), "result": np.asarray(results, dtype=object),
                "error": np.asarray(errors, dtype=object)}


def _resource(x: float) -> float:
    """A Ray resource amount: Ray accepts fractions below 1 (to 1e-4) and whole numbers above."""
    return float(math.floor(x)) if x >= 1 else math.floor(x * 1e4) / 1e4


def plan_resources(cluster: dict, node_cpus: Sequence[float], *, workers: int, n_shards: int,
                   gpus_per_worker: float | None, device: str | None) -> dict:
    """How the actor pool is sized (pure arithmetic, no Ray call).

    Args:
        cluster: ``ray.cluster_resources()`` (``{"CPU": c, "GPU": g, ...}``).
        node_cpus: the CPUs of each alive node.
        workers: ``--workers``; the pool never has more actors than shards.
        gpus_per_worker: ``--gpus-per-worker`` (None: 1 when the cluster has a GPU and ``device`` is not
            "cpu", else 0).
        device: the run's resolved device ("cpu" / "cuda" / None).

    Returns: ``{"actors", "num_cpus", "num_gpus", "threads", "device"}``. Each actor reserves
    ``CPUs / (actors + 1)`` (fractional below one CPU): a whole CPU per actor on a small machine leaves
    nothing for Ray Data's own tasks and the pool stalls (DESIGN.md §4: 2 CPUs, 2 actors of 1 CPU hang).
    ``threads`` is the actor's share of the cores (cores / actors, at most one node's cores).

    Raises: DataError when GPUs are asked for and the cluster has fewer than one worker's share, or the
    run's device is "cuda" and no GPU would be reserved.
    """
    actors = max(1, min(int(workers), int(n_shards)))
    cpus = float(cluster.get("CPU", 0.0))
    gpus_avail = float(cluster.get("GPU", 0.0))
    if gpus_per_worker is None:
        gpus = 1.0 if gpus_avail >= 1 and device != "cpu" else 0.0
    else:
        gpus = float(gpus_per_worker)
    if gpus > 0 and gpus_avail < gpus:
        raise _error(f"--gpus-per-worker {gpus:g}: the Ray cluster has {gpus_avail:g} GPUs "
                     f"(pass --gpus-per-worker 0 to run the proxies on CPUs)")
    if gpus == 0 and device == "cuda":
        raise _error("--device: the run's device is cuda (asked for, or found by --device auto on this machine) "
                     f"but no GPU is reserved for the Ray workers (the cluster has {gpus_avail:g} GPUs, "
                     f"--gpus-per-worker {gpus:g}); pass --gpus-per-worker 1, or --device cpu")
    node_max = max([float(c) for c in node_cpus] or [cpus]) or 1.0
    num_cpus = _resource(min(cpus / (actors + 1), node_max)) if cpus > 0 else 0.0
    threads = max(1, int(min(cpus / actors, node_max))) if cpus > 0 else 1
    return {"actors": actors, "num_cpus": num_cpus, "num_gpus": _resource(gpus) if gpus > 0 else 0.0,
            "threads": threads, "device": "cuda" if gpus > 0 else (device or "cpu")}


def _connect(address: str | None) -> bool:
    """Connects to ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:10001``; None: ``$RAY_ADDRESS``, as
    ``ray job submit`` sets it), or starts a local Ray instance (all of this machine's CPUs and GPUs) when
    neither is set. Returns whether this call initialised Ray (so it shuts it down); an already-initialised
    Ray (a notebook, a test) is used as is."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    common = dict(logging_level=logging.WARNING, log_to_driver=False)
    if address:
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
        if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
            env = {}  # a driver of `ray job submit`: the job's own runtime_env applies, unchanged
        try:
            ray.init(address=address, runtime_env={"env_vars": env} if env else None, **common)
        except (ConnectionError, TimeoutError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise _error(f"--address {address}: cannot connect to a Ray cluster ({first}); start one with "
                         f"`ray start --head`, or leave --address out for a local Ray") from None
    else:
        # address="local": always a fresh instance owned by this process (never a stray cluster)
        ray.init(address="local", include_dashboard=False, **common)
    return True


def run(run_dir, shard_ids: Sequence[int], *, workers: int = 1, gpus_per_worker: float | None = None,
        address: str | None = None, device: str | None = None, on_done: Callable, on_rows: Callable | None = None):
    """Runs the given shards of a planned run directory on Ray Data (``score_dataset(engine="ray")``).

    Args:
        run_dir: the run directory (config.json + plan.parquet written by the plan pass); every node must
            see it at the same absolute path.
        shard_ids: the shards to run (the ones the manifest does not list yet).
        workers: actors in the pool, each with one loaded proxy (at most one per shard).
        gpus_per_worker: GPUs reserved per actor (None: 1 when the cluster has GPUs and ``device`` is not
            "cpu"); > 0 runs the proxies on CUDA.
        address: a Ray cluster (``auto``, ``HOST:PORT``, ``ray://HOST:10001``); None: ``$RAY_ADDRESS`` when
            set, else a local Ray instance with this machine's CPUs and GPUs for the duration of the call.
            When Ray is already initialised in this process, that connection is used (and kept).
        device: the run's device ("cpu" / "cuda"), used by the actors unless GPUs are reserved.
        on_done: ``on_done(ShardResult)``, called in this (the driver) process as each shard arrives,
            after its files are on disk; it records the shard in the manifest.
        on_rows: ``on_rows(n)`` progress callback (the rows of each finished shard).

    Returns: a :class:`~prism_kernels.score.runner.Timing` (``compute_s``: the actors' forward/backward
    seconds summed; ``wall_s``: this call, Ray start-up included).

    Raises: DataError for user mistakes, raised in an actor or here (one line, no Ray traceback); other
    worker failures as Ray raises them. Shards recorded before a failure stay recorded.
    """
    from ..score.runner import ShardResult, Timing

    t0 = time.perf_counter()
    shard_ids = [int(s) for s in shard_ids]
    timing = Timing()
    if not shard_ids:
        return timing
    try:
        import ray
        import ray.data
    except ImportError:
        raise _error("--engine ray needs Ray Data: pip install 'prism_kernels[ray]' (or use --engine local)") \
            from None
    run_dir = str(Path(run_dir).resolve())
    started = _connect(address)
    ctx = ray.data.DataContext.get_current()
    data_log, bars_log = logging.getLogger("ray.data"), logging.getLogger("ray.data._internal.progress")
    saved = (ctx.enable_progress_bars, data_log.level, bars_log.level)
    rows = None
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        res = plan_resources(ray.cluster_resources(), [n.get("Resources", {}).get("CPU", 0.0) for n in nodes],
                             workers=workers, n_shards=len(shard_ids), gpus_per_worker=gpus_per_worker,
                             device=device)
        ctx.enable_progress_bars = False  # the CLI draws its own bar (rows/s, ETA)
        data_log.setLevel(max(data_log.getEffectiveLevel(), logging.WARNING))  # no per-run INFO lines
        bars_log.setLevel(logging.ERROR)  # nor "Progress bars disabled"
        ds = ray.data.from_items([{"shard": s} for s in shard_ids], override_num_blocks=len(shard_ids))
        # a fixed pool of `actors` (Ray >= 2.51 spells concurrency=N this way); one task in flight per
        # actor, so a shard waits for a free actor rather than in a busy one's queue
        pool = ray.data.ActorPoolStrategy(size=res["actors"], max_tasks_in_flight_per_actor=1)
        ds = ds.map_batches(
            ShardWorker, batch_size=1, batch_format="numpy", compute=pool,
            num_cpus=res["num_cpus"], num_gpus=res["num_gpus"] or None,
            fn_constructor_kwargs={"run_dir": run_dir, "device": res["device"], "threads": res["threads"],
                                   "cwd": os.getcwd()})
        rows = iter(ds.iter_rows())  # results in the order they finish (preserve_order is off)
        for row in rows:
            if row["error"]:  # a user mistake found by a worker: one line, like the local engine's
                raise _error(str(row["error"]).strip().splitlines()[0])
            result = ShardResult(**json.loads(row["result"]))
            on_done(result)
            timing.compute_s += result.seconds
            if on_rows is not None:
                on_rows(result.rows)
    finally:
        if rows is not None and hasattr(rows, "close"):
            rows.close()  # stops the dataset's execution (and its actors) when leaving early
        ctx.enable_progress_bars = saved[0]
        data_log.setLevel(saved[1])
        bars_log.setLevel(saved[2])
        if started:
            ray.shutdown()
    timing.wall_s = time.perf_counter() - t0
    return timing
