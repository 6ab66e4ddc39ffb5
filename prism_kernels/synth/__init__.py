"""Synthesis loops on the kernels (DESIGN.md section 1): generator clients with an on-disk request cache
(`generators`, `cache`) and the one example format both loops use (`format`).

Importing this package stays light: httpx, transformers and torch are imported where a call needs them.
"""

from .cache import RequestCache
from .format import Example, format_examples, parse_examples
from .generators import (CallableGenerator, Generation, GenerationRequest, Generator, GeneratorError,
                         LocalGenerator, OpenAIGenerator, derive_seed, generator_from_cli)

__all__ = ["RequestCache", "Example", "format_examples", "parse_examples", "CallableGenerator", "Generation",
           "GenerationRequest", "Generator", "GeneratorError", "LocalGenerator", "OpenAIGenerator",
           "derive_seed", "generator_from_cli"]
