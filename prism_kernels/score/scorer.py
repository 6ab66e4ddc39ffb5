"""The Scorer: per-sample gradient sketches of records, batch by batch (the backend others call).

    from prism_kernels.score import Scorer
    scorer = Scorer("path/to/model", k=1024, kind="rademacher", seed=0)
    out = scorer.sketch_records([{"question": "...", "answer": "..."}, ...])
    out.sketches      # [n, k] float32 (NaN rows where out.finite is False)
    ds = ds.map(scorer.map_fn(), batched=True, batch_size=64)   # adds "sketch", "loss", "n_tokens", ...

Per-sample results do not depend on which batch a sample lands in (up to float rounding of padded
matrix products, within the sketch tolerance): every sample's loss is its own mean next-token loss over
its response tokens and its sketch the projection of that loss's gradient (pk.GradientSketcher).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import torch

import prism_kernels as pk

from .plan import INVALID, NO_TARGETS, cut_batches


class SketchBatch(pk.SketchBatch):
    """``(sketches [n, k] float32, finite [n] bool)`` with ``.meta`` (pk.SketchMeta), plus per-sample
    columns: ``loss`` [n] float32 (NaN where not computed), ``n_tokens`` [n] int64,
    ``n_response_tokens`` [n] int64, ``truncated`` [n] bool, ``skipped_reason`` list[str | None].
    Rows that were not sketched (skipped, or not finite) have ``finite`` False; skipped rows have NaN
    sketches."""

    def __new__(cls, sketches, finite, meta, *, loss, n_tokens, n_response_tokens, truncated, skipped_reason):
        obj = super().__new__(cls, sketches, finite, meta)
        obj.loss, obj.n_tokens, obj.n_response_tokens = loss, n_tokens, n_response_tokens
        obj.truncated, obj.skipped_reason = truncated, skipped_reason
        return obj


def _fieldmap(fields):
    from ..data import FieldMap, parse_fields

    if fields is None or isinstance(fields, FieldMap):
        return fields
    if isinstance(fields, dict):
        return FieldMap.from_json(fields)
    return parse_fields(fields)


class Scorer:
    """Gradient sketches of records under a proxy causal LM.

    Args:
        model: an HF id (from the local cache), a local folder, or a loaded ``nn.Module`` (then pass
            ``tokenizer``; device and dtype are the module's).
        tokenizer: None (the model folder's), a folder, or a loaded tokenizer.
        k, kind, seed, params: the sketch (see :class:`prism_kernels.GradientSketcher`).
        fields: a ``--fields`` spec ("prompt=question,response=answer"), a FieldMap, or None (detected
            from the first records' keys).
        max_length: the most tokens per rendered sample (prompt cut from the left first).
        device: "auto" (cuda when available), "cpu" or "cuda". dtype: "auto" (bfloat16 on cuda, float32 on
            cpu), "float32", "bfloat16".
        batch_tokens: the most padded tokens per forward/backward.
        trust_remote_code: passed to ``from_pretrained``.

    Attributes: ``meta`` (pk.SketchMeta), ``model``, ``tokenizer``, ``renderer``, ``sketcher``.
    """

    def __init__(self, model, tokenizer=None, k: int = 1024, kind: str = "rademacher", seed: int = 0, fields=None,
                 params: str = "all", max_length: int = 2048, device: str = "auto", dtype: str = "auto",
                 batch_tokens: int = 16384, trust_remote_code: bool = False):
        from ..data import Renderer
        from .config import resolve_device
        from .proxy import load_model, load_tokenizer, resolve_model_dir

        if isinstance(model, (str, os.PathLike)):
            model_dir = resolve_model_dir(os.fspath(model))
            device, dtype = resolve_device(device, dtype)
            if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
                tokenizer = load_tokenizer(tokenizer or model_dir, trust_remote_code)
            model = load_model(model_dir, device, dtype, trust_remote_code)
        else:
            if tokenizer is None:
                raise ValueError("tokenizer is required when model is a loaded module")
            if isinstance(tokenizer, (str, os.PathLike)):
                tokenizer = load_tokenizer(tokenizer, trust_remote_code)
        if isinstance(batch_tokens, bool) or not isinstance(batch_tokens, int) or batch_tokens < 1:
            raise ValueError(f"batch_tokens must be an int >= 1, got {batch_tokens!r}")
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.batch_tokens = batch_tokens
        self.fieldmap = _fieldmap(fields)
        self.renderer = Renderer(tokenizer, max_length)
        try:
            self.sketcher = pk.GradientSketcher(model, k=k, kind=kind, seed=seed, params=params)
        except ValueError as exc:  # e.g. a --params regex that selects nothing
            from ..data import DataError

            raise DataError(f"--params {params!r}: {exc}") from None
        self.meta: pk.SketchMeta = self.sketcher.meta
        self.k = k
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)  # its value is irrelevant: padding is masked out
        self.padding_side = getattr(tokenizer, "padding_side", "right") or "right"

    # -- one batch --------------------------------------------------------------------------------
    def collate(self, rendered: Sequence) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pads rendered samples (on the tokenizer's padding side).

        Returns: ``input_ids`` [B, T] int64, ``attention_mask`` [B, T] int64, ``response_mask`` [B, T] bool
        (True at the tokens whose prediction is in the loss: positions >= response_start), on the CPU.
        """
        width = max(r.n_tokens for r in rendered)
        ids = torch.full((len(rendered), width), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(rendered), width), dtype=torch.int64)
        resp = torch.zeros((len(rendered), width), dtype=torch.bool)
        for b, r in enumerate(rendered):
            n = r.n_tokens
            off = width - n if self.padding_side == "left" else 0
            ids[b, off:off + n] = torch.as_tensor(r.input_ids, dtype=torch.int64)
            mask[b, off:off + n] = 1
            resp[b, off + r.response_start:off + n] = True
        return ids, mask, resp

    def sketch_collated(self, ids: torch.Tensor, mask: torch.Tensor, resp: torch.Tensor):
        """One forward/backward.

        Args: ``ids``, ``mask``, ``resp`` [B, T] from :meth:`collate`.

        Returns: ``(sketches [B, k] float32, finite [B] bool, loss [B] float32)`` on the CPU; loss is each
        sample's mean next-token cross-entropy over its response tokens (as GradientSketcher's).
        """
        captured: list[torch.Tensor] = []
        handle = self.model.register_forward_hook(
            lambda _m, _i, out: captured.append(out.logits.detach() if hasattr(out, "logits") else out[0].detach()))
        try:
            sketches, finite = self.sketcher.sketch(ids, mask, response_mask=resp)
        finally:
            handle.remove()
        with torch.no_grad():
            logits = captured[-1]
            dev = logits.device
            m, r, t = mask.to(dev).bool(), resp.to(dev), ids.to(dev)
            valid = r[:, 1:] & m[:, 1:] & m[:, :-1]
            sample_of, step_of = valid.nonzero(as_tuple=True)
            nll = torch.nn.functional.cross_entropy(logits[sample_of, step_of].float(), t[:, 1:][sample_of, step_of],
                                                    reduction="none")
            loss = torch.zeros(ids.shape[0], dtype=torch.float32, device=dev).index_add(0, sample_of, nll)
            loss = loss / valid.sum(1)
        captured.clear()
        return sketches.float().cpu(), finite.cpu(), loss.cpu()

    # -- many samples ---------------------------------------------------------------------------------
    def sketch_rendered(self, rendered: Sequence, batches: Sequence[Sequence[int]] | None = None,
                        on_batch: Callable[[int], None] | None = None):
        """Sketches rendered samples (``Rendered`` or None = skipped) in length-sorted batches.

        Args:
            rendered: [n] Rendered (or None for rows that are not sketched).
            batches: lists of indexes into ``rendered`` (default: :func:`cut_batches` of the live rows).
            on_batch: called with the batch's row count after each forward/backward.

        Returns: ``(sketches [n, k] float32 (NaN rows where not sketched), finite [n] bool, loss [n] float32)``.
        """
        n = len(rendered)
        out = torch.full((n, self.k), float("nan"), dtype=torch.float32)
        finite = torch.zeros(n, dtype=torch.bool)
        loss = torch.full((n,), float("nan"), dtype=torch.float32)
        if batches is None:
            live = [i for i, r in enumerate(rendered) if r is not None]
            batches = [[live[j] for j in b] for b in cut_batches([rendered[i].n_tokens for i in live],
                                                                  self.batch_tokens)]
        for idx in batches:
            s, f, lo = self.sketch_collated(*self.collate([rendered[i] for i in idx]))
            index = torch.as_tensor(list(idx), dtype=torch.int64)
            out[index], finite[index], loss[index] = s, f, lo
            if on_batch is not None:
                on_batch(len(idx))
        return out, finite, loss

    def sketch_records(self, records: Sequence[dict]) -> SketchBatch:
        """Sketches a list of records (dicts).

        Args: records: [n] dicts; the fields come from ``fields`` or are detected from the first record's keys.

        Returns: :class:`SketchBatch` with sketches [n, k] float32. A record the field map cannot read
        ("invalid_record") or whose rendering is skipped (e.g. "empty_response") gets a NaN sketch,
        ``finite`` False and its ``skipped_reason``; the other records are unaffected.
        """
        from ..data import DataError, detect_fields

        records = list(records)
        if self.fieldmap is None:
            if not records:
                raise ValueError("records is empty and no fields were given")
            self.fieldmap = detect_fields(list(records[0].keys()))
        samples, where, reasons = [], [], [None] * len(records)
        for i, rec in enumerate(records):
            try:
                samples.append(self.fieldmap.extract(rec))
                where.append(i)
            except DataError:
                reasons[i] = INVALID
        every: list = [None] * len(records)  # the Rendered of every mapped record (for its columns)
        rendered: list = [None] * len(records)  # only the rows to sketch
        for i, r in zip(where, self.renderer.render_many(samples) if samples else []):
            every[i] = r
            reasons[i] = r.skipped_reason
            if reasons[i] is None and r.n_tokens - max(r.response_start, 1) < 1:
                reasons[i] = NO_TARGETS
            if reasons[i] is None:
                rendered[i] = r
        sketches, finite, loss = self.sketch_rendered(rendered)
        tok = [r.n_tokens if r is not None else 0 for r in every]
        resp = [r.n_response_tokens if r is not None else 0 for r in every]
        trunc = [bool(r.truncated) if r is not None else False for r in every]
        return SketchBatch(sketches, finite, self.meta, loss=loss, n_tokens=torch.tensor(tok, dtype=torch.int64),
                           n_response_tokens=torch.tensor(resp, dtype=torch.int64),
                           truncated=torch.tensor(trunc, dtype=torch.bool), skipped_reason=reasons)

    def map_fn(self) -> Callable[[dict], dict]:
        """A function for ``datasets.Dataset.map(fn, batched=True)``: from a batch (dict of columns) it
        returns new columns ``sketch`` (list of k floats), ``loss``, ``n_tokens``, ``truncated``,
        ``finite``, ``skipped_reason``."""

        def fn(batch: dict) -> dict:
            keys = list(batch.keys())
            n = len(batch[keys[0]]) if keys else 0
            out = self.sketch_records([{k: batch[k][i] for k in keys} for i in range(n)])
            return {"sketch": out.sketches.tolist(), "loss": out.loss.tolist(), "n_tokens": out.n_tokens.tolist(),
                    "truncated": out.truncated.tolist(), "finite": out.finite.tolist(),
                    "skipped_reason": list(out.skipped_reason)}

        return fn
