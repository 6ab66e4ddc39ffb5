"""Per-sample gradient sketches of a Hugging Face causal LM in one forward/backward per batch.

:class:`GradientSketcher` computes, for every sample of a batch, the random projection ``R g_b`` of
``g_b``, the gradient of the sample's own mean next-token loss over its response tokens with
respect to the selected parameters (G-Vendi's per-sample feature), without ever holding more than
one layer's per-sample gradients:

* hooks capture each layer's inputs in the forward pass and the gradient of its outputs in the
  backward pass (``torch.autograd.grad`` with respect to the layer outputs, so no parameter
  ``.grad`` is touched); the layer's contribution is sketched and the captured tensors released
  as soon as its output gradient arrives;
* ``nn.Linear``: ``W_b = sum_t g_t a_t^T`` (row chunks bounded in memory) and ``bias_b = sum_t g_t``;
  ``nn.Embedding``: rows ``sum_{t: tok_t = v} g_t`` of the tokens present; RMSNorm (HF Llama/Qwen2
  style) and ``nn.LayerNorm``: ``w_b = sum_t g_t * xhat_t`` with xhat recomputed exactly as the
  module does, ``bias_b = sum_t g_t``;
* every parameter is a block of the stream with ``block = FNV-1a-32(name)`` and its coordinates in
  row-major order (offset 0), so its matrix does not depend on the selection; a tied parameter
  (e.g. embedding and lm_head) is one block (its first name) whose uses add up;
* ``kind="kronecker"``: linear and embedding weights use the Kronecker form (:func:`sketch_kronecker`),
  the other parameters (biases, norms) the dense Rademacher sketch with the same k.

The samples of a causal LM do not interact, so the gradient of the summed per-sample losses with
respect to a layer's output at sample b is exactly sample b's own output gradient.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import projection as _sk
from ._checks import check_choice

#: Kinds of :class:`GradientSketcher`: the projection kinds of :func:`prism_kernels.sketch`
#: (``pk.SKETCH_KINDS``) plus the layer-wise Kronecker form.
SKETCHER_KINDS = (*_sk.KINDS, "kronecker")
_CHUNK_FLOATS = 1 << 24  # per-sample gradient floats formed at once (64 MiB)


def param_block(name: str) -> int:
    """Block id of a parameter: FNV-1a 32-bit hash of its UTF-8 name."""
    h = 0x811C9DC5
    for byte in name.encode("utf-8"):
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


@dataclass(frozen=True)
class SketchMeta:
    """What makes two sketches comparable. Sketches with different metadata must not be mixed."""

    seed: int
    kind: str
    k: int
    s: int
    selection: str
    model_fingerprint: str
    package_version: str
    stream_version: int

    def check_compatible(self, other: "SketchMeta") -> None:
        if self != other:
            diff = {key: (a, b) for (key, a), b in zip(asdict(self).items(), asdict(other).values()) if a != b}
            raise ValueError(f"incompatible sketches: metadata differ in {diff}")


class SketchBatch(tuple):
    """``(sketches [B, k] float32, finite [B] bool)`` with ``.meta`` (:class:`SketchMeta`)."""

    meta: SketchMeta

    def __new__(cls, sketches: torch.Tensor, finite: torch.Tensor, meta: SketchMeta):
        obj = super().__new__(cls, (sketches, finite))
        obj.meta = meta
        return obj

    @property
    def sketches(self) -> torch.Tensor:
        return self[0]

    @property
    def finite(self) -> torch.Tensor:
        return self[1]


def concat_sketches(batches) -> SketchBatch:
    """Concatenate :class:`SketchBatch` results; a ValueError if their metadata differ."""
    if isinstance(batches, SketchBatch) or isinstance(batches, (str, bytes)):
        raise ValueError("batches must be a list (or other iterable) of SketchBatch, got a single "
                         f"{type(batches).__name__}")
    try:
        batches = list(batches)
    except TypeError:
        raise ValueError(f"batches must be a list (or other iterable) of SketchBatch, got "
                         f"{type(batches).__name__}") from None
    if not batches:
        raise ValueError("batches must not be empty")
    for i, b in enumerate(batches):
        if not isinstance(b, SketchBatch):
            raise ValueError(f"batches[{i}] is not a SketchBatch (its metadata is unknown)")
        batches[0].meta.check_compatible(b.meta)
        if b.sketches.dim() != 2 or b.sketches.shape[1] != batches[0].sketches.shape[1] \
                or b.finite.shape != (b.sketches.shape[0],):
            raise ValueError(f"batches[{i}]: sketches {tuple(b.sketches.shape)} / finite {tuple(b.finite.shape)} "
                             f"do not match batches[0]'s width {tuple(batches[0].sketches.shape[1:])}")
    return SketchBatch(torch.cat([b.sketches for b in batches]), torch.cat([b.finite for b in batches]),
                       batches[0].meta)


def _is_rms_norm(module: nn.Module) -> bool:
    return type(module).__name__.endswith("RMSNorm") and (
        hasattr(module, "variance_epsilon") or hasattr(module, "eps"))


def _rms_xhat(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The normalised input of an HF-style RMSNorm, computed exactly as its forward does."""
    eps = getattr(module, "variance_epsilon", None)
    if eps is None:
        eps = module.eps
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    return (h * torch.rsqrt(variance + eps)).to(x.dtype)


class GradientSketcher:
    """Batched per-sample gradient sketches of a causal LM.

    Args:
        model: a Hugging Face causal LM (``model(input_ids, attention_mask, position_ids).logits``);
            put in eval mode.
        k: sketch dimension (for ``"kronecker"``, factored as :func:`kronecker_factors`).
        kind: "rademacher", "gaussian", "sparse" or "kronecker".
        seed: the stream's key.
        params: "all" (every trainable parameter, as in G-Vendi), "linear" (parameters of nn.Linear
            modules), a regular expression matched (``re.search``) against parameter names, or a
            predicate on the name (recorded in the metadata by its ``__name__``).
        s: nonzeros per coordinate for "sparse".
        backend: sketch backend (None = fastest for the model's device).
    """

    def __init__(self, model: nn.Module, k: int = 1024, kind: str = "rademacher", seed: int = 0,
                 params: str | Callable[[str], bool] = "all", s: int = 4, backend: str | None = None):
        kind = check_choice(kind, "kind", SKETCHER_KINDS)
        k = _sk.check_sketch_arg(k, "k")
        seed = _sk.check_sketch_arg(seed, "seed")
        s = _sk.check_sketch_arg(s, "s")
        from ._backends import check_backend

        check_backend(backend)
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module (a causal LM), got {type(model).__name__}")
        self.model = model.eval()
        self.k, self.kind, self.seed, self.s, self.backend = k, kind, seed, s, backend
        self.k_in, self.k_out = _sk.kronecker_factors(k) if kind == "kronecker" else (0, 0)

        names: dict[int, list[str]] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), []).append(name)
        self.block_names = {pid: ns[0] for pid, ns in names.items()}  # tied: the first name
        selected = self._selector(params, model)
        self.selected = {pid for pid, ns in names.items() if any(selected(n) for n in ns)}
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        self.selected &= trainable
        if not self.selected:
            raise ValueError(f"params={params!r} selects no trainable parameter")
        self.selection = params if isinstance(params, str) else getattr(params, "__name__", "callable")

        self.handlers: list[tuple[nn.Module, str]] = []
        for mname, module in model.named_modules():
            own = [(n, p) for n, p in module.named_parameters(recurse=False) if id(p) in self.selected]
            if not own:
                continue
            if isinstance(module, nn.Linear):
                kind_ = "linear"
            elif isinstance(module, nn.Embedding):
                kind_ = "embedding"
            elif _is_rms_norm(module) and [n for n, _ in own] == ["weight"]:
                kind_ = "rmsnorm"
            elif isinstance(module, nn.LayerNorm):
                kind_ = "layernorm"
            else:
                bad = [f"{mname}.{n}" for n, _ in own]
                raise ValueError(f"no per-sample gradient rule for parameters {bad} of {type(module).__name__}; "
                                 "select other parameters (params='linear' or a regex)")
            self.handlers.append((module, kind_))
        self.meta = SketchMeta(self.seed, kind, k, self.s if kind == "sparse" else 0, str(self.selection),
                               self._fingerprint(model), _package_version(), _sk.STREAM_VERSION)

    @staticmethod
    def _selector(params, model) -> Callable[[str], bool]:
        if callable(params):
            return params
        if params == "all":
            return lambda name: True
        if params == "linear":
            linear = {f"{m}.{n}" if m else n for m, mod in model.named_modules() if isinstance(mod, nn.Linear)
                      for n, _ in mod.named_parameters(recurse=False)}
            return lambda name: name in linear
        if isinstance(params, str):
            try:
                pattern = re.compile(params)
            except re.error as exc:
                raise ValueError(f"params is not a valid regular expression: {exc}") from None
            return lambda name: pattern.search(name) is not None
        raise ValueError(f"params must be 'all', 'linear', a regex or a predicate, got {params!r}")

    @staticmethod
    def _fingerprint(model: nn.Module) -> str:
        h = hashlib.sha256()
        for name, p in model.named_parameters():
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
            h.update(str(float(p.detach().double().sum())).encode())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------------------------------------
    def _add(self, acc: torch.Tensor, param: torch.Tensor, rows: torch.Tensor, offset: int = 0) -> None:
        """acc += sketch of per-sample gradient rows [B, n] at coordinates offset.. of param's block
        (dense Rademacher for the parameters a Kronecker sketcher does not factor)."""
        kind = "rademacher" if self.kind == "kronecker" else self.kind
        block = param_block(self.block_names[id(param)])
        acc += _sk.sketch(rows.to(torch.float32).contiguous(), self.k, kind, self.seed, block, offset, s=self.s,
                          backend=self.backend).to(acc.device)

    def _linear(self, acc, module: nn.Linear, a: torch.Tensor, g: torch.Tensor) -> None:
        a = a.to(torch.float32)  # [B, T, d_in]
        g = g.to(torch.float32)  # [B, T, d_out]
        batch = a.shape[0]
        w = module.weight
        if id(w) in self.selected:
            if self.kind == "kronecker":
                block = param_block(self.block_names[id(w)])
                acc += _sk.sketch_kronecker(a, g, self.k_in, self.k_out, self.seed, block, backend=self.backend)
            else:
                d_out, d_in = w.shape
                rows = max(1, _CHUNK_FLOATS // max(1, batch * d_in))
                for o0 in range(0, d_out, rows):
                    o1 = min(d_out, o0 + rows)
                    per_sample = torch.bmm(g[:, :, o0:o1].transpose(1, 2), a)  # [B, o1 - o0, d_in]
                    self._add(acc, w, per_sample.reshape(batch, -1), o0 * d_in)
        if module.bias is not None and id(module.bias) in self.selected:
            self._add(acc, module.bias, g.sum(1))

    def _embedding(self, acc, module: nn.Embedding, ids: torch.Tensor, g: torch.Tensor) -> None:
        w = module.weight
        g = g.to(torch.float32)  # [B, T, d]
        batch, dim = g.shape[0], g.shape[-1]
        if self.kind == "kronecker":
            block = param_block(self.block_names[id(w)])
            acc += _sk.sketch_kronecker_embedding(ids, g, self.k_in, self.k_out, self.seed, block,
                                                  backend=self.backend).to(acc.device)
            return
        unique, inverse = torch.unique(ids, return_inverse=True)
        rows = torch.zeros(batch, unique.numel(), dim, dtype=torch.float32, device=g.device)
        rows.scatter_add_(1, inverse.unsqueeze(-1).expand(-1, -1, dim), g)  # [B, U, d]
        # Consecutive token ids are contiguous in the table: sketch each run with one call.
        u = unique.tolist()
        start = 0
        for i in range(1, len(u) + 1):
            if i == len(u) or u[i] != u[i - 1] + 1:
                self._add(acc, w, rows[:, start:i].reshape(batch, -1), u[start] * dim)
                start = i

    def _norm(self, acc, module: nn.Module, xhat: torch.Tensor, g: torch.Tensor) -> None:
        g = g.to(torch.float32)
        if module.weight is not None and id(module.weight) in self.selected:
            self._add(acc, module.weight, (g * xhat.to(torch.float32)).sum(1).reshape(g.shape[0], -1))
        bias = getattr(module, "bias", None)
        if bias is not None and id(bias) in self.selected:
            self._add(acc, bias, g.sum(1).reshape(g.shape[0], -1))

    # ------------------------------------------------------------------------------------------
    def sketch(self, input_ids, attention_mask=None, labels=None, response_mask=None) -> SketchBatch:
        """Sketch every sample's gradient.

        Args:
            input_ids: [B, T] int64, left or right padded.
            attention_mask: [B, T] (1 = token, 0 = padding); default all ones.
            labels: [B, T] with -100 where no loss is taken (transformers' convention: token t is
                predicted from position t - 1), or None.
            response_mask: [B, T] bool over input positions: the tokens whose prediction is in the
                loss. Exclusive with labels. If both are None, every non-padding token after the
                first is a target.

        Returns:
            :class:`SketchBatch` ``(sketches [B, k] float32, finite [B] bool)`` with ``.meta``.
            ``finite[b]`` is False when sample b's loss or sketch is not finite; other samples are
            unaffected.

        Raises:
            ValueError: a sample has no response token (naming its index), or mismatched shapes.
        """
        ids = torch.as_tensor(input_ids)
        if ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, T], got shape {tuple(ids.shape)}")
        batch, steps = ids.shape
        device = next(self.model.parameters()).device
        ids = ids.to(device)
        mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask).to(device)
        if mask.shape != ids.shape:
            raise ValueError(f"attention_mask must be [B, T] = {tuple(ids.shape)}, got {tuple(mask.shape)}")
        mask = mask.to(torch.int64)
        if labels is not None and response_mask is not None:
            raise ValueError("give labels or response_mask, not both")
        if labels is not None:
            labels = torch.as_tensor(labels).to(device)
            if labels.shape != ids.shape:
                raise ValueError(f"labels must be [B, T] = {tuple(ids.shape)}, got {tuple(labels.shape)}")
            targets = labels[:, 1:]
            valid = (targets != -100) & (mask[:, 1:] > 0)
        else:
            targets = ids[:, 1:]
            if response_mask is not None:
                response_mask = torch.as_tensor(response_mask).to(device)
                if response_mask.shape != ids.shape:
                    raise ValueError(f"response_mask must be [B, T] = {tuple(ids.shape)}, "
                                     f"got {tuple(response_mask.shape)}")
                valid = response_mask[:, 1:].bool() & (mask[:, 1:] > 0) & (mask[:, :-1] > 0)
            else:
                valid = (mask[:, 1:] > 0) & (mask[:, :-1] > 0)
        counts = valid.sum(1)
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"sample(s) {empty} have no response tokens (input index {empty[0]} first)")
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)

        acc = torch.zeros(batch, self.k, dtype=torch.float32, device=device)
        outputs: list[torch.Tensor] = []
        handles = []

        def forward_hook(module, inputs, output, kind):
            if not isinstance(output, torch.Tensor) or not output.requires_grad:
                return
            x = inputs[0].detach()
            if kind == "rmsnorm":
                saved = _rms_xhat(module, x)
            elif kind == "layernorm":
                saved = F.layer_norm(x, module.normalized_shape, None, None, module.eps)
            else:
                saved = x

            def on_grad(g, module=module, kind=kind, saved=[saved]):  # noqa: B006 - released below
                s = saved.pop()
                g = g.detach()
                if kind == "linear":
                    self._linear(acc, module, s, g)
                elif kind == "embedding":
                    self._embedding(acc, module, s, g)
                else:
                    self._norm(acc, module, s, g)

            output.register_hook(on_grad)
            outputs.append(output)

        for module, kind in self.handlers:
            handles.append(module.register_forward_hook(
                lambda m, i, o, kind=kind: forward_hook(m, i, o, kind)))
        try:
            with torch.enable_grad():
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
                # Cross-entropy on the response positions only; summed per sample.
                sample_of, step_of = valid.nonzero(as_tuple=True)
                nll = F.cross_entropy(logits[sample_of, step_of].float(), targets[sample_of, step_of],
                                      reduction="none")
                per_sample = torch.zeros(batch, dtype=torch.float32, device=device).index_add(
                    0, sample_of, nll) / counts
                if outputs:
                    torch.autograd.grad(per_sample.sum(), outputs, allow_unused=True)
        finally:
            for h in handles:
                h.remove()
            outputs.clear()
        finite = torch.isfinite(acc).all(1) & torch.isfinite(per_sample.detach())
        return SketchBatch(acc, finite, self.meta)


def _package_version() -> str:
    from . import __version__

    return __version__
