"""Distributed engines over :mod:`prism_kernels.score` (Ray Data). Nothing home-made: the engines hand the
planned shards to Ray Data and record what comes back.

    prism score DATA --engine ray [--address ADDR] --workers N [--gpus-per-worker G]

``prism_kernels.distributed.ray_engine.run`` is what ``score_dataset(engine="ray")`` calls; docs/ray.md
documents the cluster command. Importing this package does not import Ray.
"""
