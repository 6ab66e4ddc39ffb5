"""Integrations of prism_kernels into other data pipelines.

* :mod:`prism_kernels.integrations.nemo_curator` — NeMo Curator stages (``GradientSketchStage``,
  ``PrismaticFilterStage``) and ``gvendi_from_output`` (needs the ``curator`` extra).
* :mod:`prism_kernels.integrations.sketch_output` — the G-Vendi summary of a table of sketch rows
  (Parquet / JSONL / Arrow), without Curator.

Nothing here is imported by ``import prism_kernels``.
"""
