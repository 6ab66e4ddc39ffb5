"""The offline demos of the synthesis loops: ``prism synth prismatic --demo`` and ``prism synth embedsdg --demo``.

Both run end to end on models shipped with the package, with nothing to download:

- the data: :func:`prism_kernels.demo.problems.demo_pool`, a skewed set of templated word problems (a few
  dense templates and a long tail of rare ones), written next to the run directory as JSONL;
- Prismatic's proxy (the gradient sketches): the demo LM of ``prism score``'s demo
  (:data:`prism_kernels.demo.DEMO_MODEL_DIR`);
- the generator, EmbedSDG's student and its teacher: one model, the demo LM fine-tuned on the loops' own prompts
  (:data:`prism_kernels.demo.DEMO_SYNTH_MODEL_DIR`, ``scripts/train_demo_synth_lm.py``), loaded through
  ``--generator local:PATH`` like any local causal LM.

The demo settings are in :data:`PRISMATIC_SETTINGS` and :data:`EMBEDSDG_SETTINGS`; an option given on the command
line wins (an option left at its default takes the demo's value). After the Prismatic loop, the demo compares the
pool's G-Vendi with accepting as many of the same candidates at random (10 draws,
:func:`prism_kernels.synth.prismatic.compare_with_random_acceptance`) and exits with status 1 when the loop does
not beat the random draws' mean.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import DEMO_MODEL_DIR, DEMO_SYNTH_MODEL_DIR

#: ``prism synth prismatic --demo``: 3 rounds of 32 requests on a 128-problem pool (112 problems of 4 dense
#: templates, 2 problems of each of 8 rare templates).
PRISMATIC_SETTINGS = {
    "out": "demo_out/synth-prismatic", "model": str(DEMO_MODEL_DIR), "generator": f"local:{DEMO_SYNTH_MODEL_DIR}",
    "k": 1024, "kind": "sparse", "device": "cpu", "max_length": 256, "shard_rows": 64, "rounds": 3,
    "per_round": 32, "shots": 2, "max_tokens": 256, "temperature": 0.7, "outlier_quantile": 0.1,
}
PRISMATIC_POOL = {"dense_templates": 4, "dense_rows": 112, "rare_templates": 8, "rare_rows": 2}

#: ``prism synth embedsdg --demo``: 16 examples for the sparsest windows (T = 5; the default quantile rule finds
#: no window with 0 < count < T and an occupied centre cell on a map this small) of a 2-D PCA map of 256 problems
#: (160 of 4 dense templates, 4 of each of 24 rare ones).
EMBEDSDG_SETTINGS = {
    "out": "demo_out/synth-embedsdg", "student": str(DEMO_SYNTH_MODEL_DIR), "teacher": f"local:{DEMO_SYNTH_MODEL_DIR}",
    "n": 16, "dims": 2, "reduce": "pca", "device": "cpu", "max_length": 256, "max_tokens": 256,
    "decode_tokens": 48, "threshold": 5.0,
}
EMBEDSDG_DATA = {"dense_templates": 4, "dense_rows": 160, "rare_templates": 24, "rare_rows": 4}


def apply_settings(args, defaults, settings: dict) -> list[str]:
    """Sets each of ``settings`` on ``args`` where ``args`` holds the parser's default (``defaults``, the
    namespace of an empty command line); returns the names the user had set (kept)."""
    kept = []
    for name, value in settings.items():
        if getattr(args, name, None) == getattr(defaults, name, None):
            setattr(args, name, value)
        else:
            kept.append(name)
    return kept


def write_data(path: Path, rows: list[dict]) -> Path:
    """Writes ``rows`` as JSONL to ``path`` unless it already holds exactly that text (a rerun resumes: a
    rewritten file would count as changed data for the run directory)."""
    from ..score.rundir import atomic_write

    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, text)


def _data_dir(out) -> Path:
    out = Path(out)
    return out.parent / f"{out.name}-data"


def _check_assets(*dirs: Path) -> None:
    from ..data import DataError

    for d in dirs:
        if not (d / "model.safetensors").exists():
            raise DataError(f"the demo model is missing: {d}/model.safetensors (a source checkout without its "
                            "assets? scripts/train_demo_lm.py and scripts/train_demo_synth_lm.py make them)")


def run_prismatic_demo(args, defaults, say=print) -> int:
    """``prism synth prismatic --demo``: the loop on :data:`PRISMATIC_SETTINGS`, then the comparison with random
    acceptance (also written to ``RUN_DIR/comparison.json``). Returns the exit status."""
    from ..score.rundir import write_json
    from ..synth.prismatic import compare_with_random_acceptance, run_prismatic
    from .problems import demo_pool

    _check_assets(DEMO_MODEL_DIR, DEMO_SYNTH_MODEL_DIR)
    apply_settings(args, defaults, PRISMATIC_SETTINGS)
    if not args.pool and not args.score_run:
        args.pool = [str(write_data(_data_dir(args.out) / "pool.jsonl", demo_pool(**PRISMATIC_POOL)))]
    say(f"prismatic demo: pool {args.pool or args.score_run}, proxy {args.model}, generator {args.generator}, "
        f"{args.rounds} rounds of {args.per_round} requests -> {args.out}")
    run_prismatic(args)
    cmp = compare_with_random_acceptance(args.out, draws=10, seed=args.synth_seed)
    write_json(Path(args.out) / "comparison.json", cmp)
    won = cmp["loop"] > cmp["random_mean"]
    say(f"pool G-Vendi {cmp['initial']:.3f} -> {cmp['loop']:.3f} after {len(cmp['kept_per_round'])} rounds "
        f"(kept {cmp['kept_per_round']}); accepting as many of the same candidates at random: mean "
        f"{cmp['random_mean']:.3f}, max {cmp['random_max']:.3f} (10 draws); the loop beats {cmp['beats']}/10 draws"
        + ("" if won else " -- NOT above the random mean"))
    say(f"outputs: {Path(args.out) / 'synthetic.jsonl'} (kept samples), {Path(args.out) / 'rounds.jsonl'} "
        f"(one record per round), {Path(args.out) / 'comparison.json'}")
    return 0 if won else 1


def run_embedsdg_demo(args, defaults, say=print) -> int:
    """``prism synth embedsdg --demo``: the loop on :data:`EMBEDSDG_SETTINGS`. Returns the exit status."""
    from ..synth.embedsdg import run_embedsdg
    from .problems import demo_pool

    _check_assets(DEMO_SYNTH_MODEL_DIR)
    apply_settings(args, defaults, EMBEDSDG_SETTINGS)
    if not args.data:
        args.data = [str(write_data(_data_dir(args.out) / "data.jsonl", demo_pool(**EMBEDSDG_DATA)))]
    say(f"embedsdg demo: data {args.data}, student and teacher {args.student}, {args.n} examples, "
        f"{args.dims}-D {args.reduce} map -> {args.out}")
    summary = run_embedsdg(args)
    out = Path(args.out)
    say("summary: " + ", ".join(f"{k} {v}" for k, v in summary.items() if not isinstance(v, (dict, list))))
    say(f"outputs: {out / 'synthetic.jsonl'} (generated examples with provenance), {out / 'density.png'} (the map, "
        f"sparse windows, seeds, interpolated and generated points), {out / 'summary.json'}")
    return 0
