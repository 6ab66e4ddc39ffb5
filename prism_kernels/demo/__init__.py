"""The built-in demo: G-Vendi of a dataset whose diversity is controlled (``problems``), scored with a
small proxy LM shipped with the package (``DEMO_MODEL_DIR``), and the grid-density picture (``grid``).

    python -m prism_kernels.demo [--out demo_out] [--rows 64] [--skip-grid]

Importing this package is light: the submodules import torch, transformers and matplotlib where used.
"""

from __future__ import annotations

from pathlib import Path

#: The shipped proxy LM (a small Qwen2 with a BPE tokenizer and a chat template), produced by
#: ``scripts/train_demo_lm.py``; load it with ``AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR)``.
DEMO_MODEL_DIR: Path = Path(__file__).resolve().parent.parent / "assets" / "demo-lm"

#: The synthesis demos' model (``prism synth prismatic --demo``, ``prism synth embedsdg --demo``): the proxy
#: fine-tuned by ``scripts/train_demo_synth_lm.py`` on the loops' own prompts, so that one tiny model is their
#: generator, student and teacher at once, offline.
DEMO_SYNTH_MODEL_DIR: Path = Path(__file__).resolve().parent.parent / "assets" / "demo-synth-lm"

__all__ = ["DEMO_MODEL_DIR", "DEMO_SYNTH_MODEL_DIR"]
