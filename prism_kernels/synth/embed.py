"""EmbedSDG's embedding of a training example under a student model.

An example's *weighted token-embedding sequence* is the student's input token embeddings of its text
(``model.get_input_embeddings()(input_ids)``, ``[L, d]``) multiplied by the attention mask; its
*embedding* is the sum of that sequence over tokens (``[d]``). Because the embedding is a sum, the
embedding of the mean of two zero-padded sequences is exactly the mean of the two embeddings, which
is what makes EmbedSDG's interpolation land where the reduction says it does (see
:mod:`prism_kernels.synth.embedsdg`).

Texts are tokenized without special tokens (no BOS in the middle of an interpolated sequence).
Embeddings of a whole dataset are streamed in batches; the sequences themselves are recomputed on
demand for the few seeds that need them, never stored for all N examples.
"""

from __future__ import annotations

import inspect
from typing import Iterable, Iterator, Sequence

import torch

try:  # the product layer's user-mistake error (helper "data"); a ValueError either way
    from prism_kernels.data import DataError as _UserError
except ImportError:  # pragma: no cover - until prism_kernels.data is merged
    _UserError = ValueError

__all__ = ["Embedder", "StudentError", "check_embeddable", "interpolate", "load_student"]


class StudentError(_UserError):
    """The student model cannot do what EmbedSDG needs (one line naming the model class)."""


def load_student(model, tokenizer=None, *, device: str = "cpu", dtype: str | torch.dtype = "float32",
                 trust_remote_code: bool = False):
    """Loads a student causal LM and its tokenizer.

    Args:
        model: a local path / HF id (read offline from the cache), or a loaded ``torch.nn.Module``.
        tokenizer: a tokenizer, a path / id, or None (the model's own, from the same path).
        device: torch device for the model.
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"``, ``"auto"`` or a torch dtype.
        trust_remote_code: passed to ``from_pretrained``.

    Returns:
        ``(model, tokenizer)``, the model in eval mode on ``device``; the tokenizer pads on the left
        (decoding) and has a pad token (eos when it had none).
    """
    import transformers

    path = None
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        path = str(model)
        torch_dtype = dtype if isinstance(dtype, torch.dtype) or dtype == "auto" else getattr(torch, dtype)
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype,
                                                                      trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as error:  # no such model / not a causal LM architecture
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise StudentError(f"student {path}: cannot load it as a causal LM ({first})") from None
    if tokenizer is None:
        if path is None:
            path = getattr(getattr(model, "config", None), "_name_or_path", None)
        if not path:
            raise StudentError("tokenizer: give the student's tokenizer when the model is a loaded module")
        tokenizer = path
    if isinstance(tokenizer, (str, bytes)) or hasattr(tokenizer, "__fspath__"):
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = model.to(device).eval()
    return model, tokenizer


def check_embeddable(model) -> torch.nn.Module:
    """The student's input embedding module, or a :class:`StudentError` naming the model class.

    EmbedSDG needs a causal LM that (1) exposes ``get_input_embeddings()`` returning a module that
    maps ``[B, L]`` token ids to ``[B, L, d]``, (2) accepts ``inputs_embeds`` in ``forward`` and
    (3) can ``generate``. Anything else cannot decode an interpolated embedding sequence.
    """
    name = type(model).__name__
    getter = getattr(model, "get_input_embeddings", None)
    try:
        embeddings = getter() if callable(getter) else None
    except (NotImplementedError, AttributeError):
        embeddings = None
    if not isinstance(embeddings, torch.nn.Module):
        raise StudentError(f"student: {name} has no input token embeddings (get_input_embeddings()), "
                           "so it cannot embed examples or decode embeddings; use a causal LM")
    forward = getattr(model, "forward", None)
    try:
        params = inspect.signature(forward).parameters if forward is not None else {}
    except (TypeError, ValueError):
        params = {}
    takes_embeds = "inputs_embeds" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    can_generate = callable(getattr(model, "generate", None)) and (
        not callable(getattr(model, "can_generate", None)) or bool(model.can_generate()))
    if not takes_embeds or not can_generate:
        why = "does not accept inputs_embeds" if not takes_embeds else "cannot generate text"
        raise StudentError(f"student: {name} {why}, so interpolated embeddings cannot be fed to it as "
                           "inputs_embeds; use a causal LM (AutoModelForCausalLM)")
    return embeddings


class Embedder:
    """Weighted token-embedding sequences and their sums for a student model.

    Args:
        model: the student (a causal LM; see :func:`check_embeddable`).
        tokenizer: its tokenizer.
        max_length: texts are cut to their first ``max_length`` tokens.
        batch_size: texts per embedding call.
    """

    def __init__(self, model, tokenizer, *, max_length: int = 512, batch_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.embeddings = check_embeddable(model)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        if self.max_length < 1 or self.batch_size < 1:
            raise ValueError("max_length and batch_size must be >= 1")

    @property
    def device(self) -> torch.device:
        weight = next(self.embeddings.parameters(), None)
        return weight.device if weight is not None else torch.device("cpu")

    @property
    def dim(self) -> int:
        """d, the width of the input embeddings."""
        with torch.no_grad():
            return int(self.embeddings(torch.zeros(1, 1, dtype=torch.long, device=self.device)).shape[-1])

    def _batch(self, texts: Sequence[str]):
        enc = self.tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=self.max_length,
                             padding=True, return_tensors="pt")
        ids = enc["input_ids"].to(self.device)
        mask = enc["attention_mask"].to(self.device)
        with torch.no_grad():
            tokens = self.embeddings(ids)  # [B, L, d]
            weighted = tokens * mask.unsqueeze(-1).to(tokens.dtype)
        return weighted, mask  # [B, L, d], [B, L]

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """``[n, d]`` float32 on the CPU: each text's attention-mask-weighted sum of token embeddings.

        The sum is taken in float32 whatever the model's dtype.
        """
        out = [chunk for chunk in self.embed_stream(texts)]
        if not out:
            return torch.zeros(0, self.dim, dtype=torch.float32)
        return torch.cat(out)

    def embed_stream(self, texts: Iterable[str]) -> Iterator[torch.Tensor]:
        """Yields ``[b, d]`` float32 CPU embeddings for consecutive batches of ``texts`` (any iterable,
        consumed lazily, so a dataset never has to be in memory)."""
        batch: list[str] = []
        for text in texts:
            batch.append(text)
            if len(batch) == self.batch_size:
                yield self._sums(batch)
                batch = []
        if batch:
            yield self._sums(batch)

    def _sums(self, texts: Sequence[str]) -> torch.Tensor:
        weighted, _ = self._batch(texts)
        return weighted.float().sum(dim=1).cpu()

    def sequences(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Each text's weighted token-embedding sequence, ``[L_i, d]`` in the model's dtype and device
        (only the real tokens: the padding the batch needed is removed)."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            weighted, mask = self._batch(texts[start:start + self.batch_size])
            for row, m in zip(weighted, mask):
                out.append(row[m.bool()])
        return out


def interpolate(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """EmbedSDG's interpolation: the mean of two weighted token-embedding sequences ``[L_a, d]`` and
    ``[L_b, d]``, the shorter zero-padded at its end to the longer. Returns ``[max(L_a, L_b), d]``.

    Its sum over tokens is exactly ``(first.sum(0) + second.sum(0)) / 2`` (up to rounding): the
    padding adds zeros.
    """
    if first.dim() != 2 or second.dim() != 2 or first.shape[1] != second.shape[1]:
        raise ValueError(f"interpolate: sequences must be [L, d] with the same d, got {tuple(first.shape)} "
                         f"and {tuple(second.shape)}")
    length = max(first.shape[0], second.shape[0])
    a = torch.nn.functional.pad(first, (0, 0, 0, length - first.shape[0]))
    b = torch.nn.functional.pad(second, (0, 0, 0, length - second.shape[0]))
    return (a + b) / 2
