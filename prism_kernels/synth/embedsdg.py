"""EmbedSDG (Jayaraman et al., 2026) on the grid kernels: find the sparse regions of a student's
embedding map and fill them with examples interpolated from seeds on their opposing sides.

The loop (DESIGN.md section 1)::

    examples --Embedder--> [N, d] mask-weighted sums of input token embeddings
             --reduce-->   [N, K] map (K = 2 or 3; PCA, TruncatedSVD or t-SNE)
             --pk.grid_histogram / pk.sparse_windows--> windows with 0 < count < T, centre cell not empty
             --pk.seed_pairs--> two seeds per window on opposing faces along its longer side
             --interpolate--> mean of the seeds' weighted token-embedding sequences (zero-padded)
             --Decoder--> the student "copies" that embedding sequence into text (inputs_embeds)
             --teacher--> a new "### Question / ### Answer / ### <final_answer>" example

Why the interpolated point lands in its window under PCA (checked by the tests): an example's embedding
is the sum of its weighted sequence, and zero-padding adds zeros, so the interpolated sequence sums to
the midpoint ``(e_a + e_b) / 2`` of the seeds' embeddings. PCA's ``transform`` is affine, so the point
maps to the midpoint of the seeds' coordinates. Both seeds are members of the window, binning is
monotone on every axis, and a midpoint lies between its ends on every axis, so its cell lies between
the seeds' cells, inside the window. (TruncatedSVD is linear: the same holds. t-SNE is not linear:
the fraction is measured and reported. A window with a single member takes its second seed outside
the window, where the argument does not apply.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

import prism_kernels as pk

from .embed import Embedder, StudentError, check_embeddable, interpolate
from .embedsdg_prompts import COPY_PROMPT

__all__ = ["DensityMap", "Decoder", "density_map", "in_window", "interpolated_embeddings"]


@dataclass
class DensityMap:
    """The grid over the reduced map and its sparse windows.

    Attributes:
        coords: ``[N, K]`` float64 coordinates of the examples.
        bounds: ``[K, 2]`` float64 (min, max) per axis: the bounding box of ``coords``.
        counts: ``[*bins]`` int64 points per cell.
        windows: the :class:`prism_kernels.SparseWindows` (corners ``[M, K]``, counts ``[M]``, members).
        pairs: ``[M, 2]`` int64 seed indices (lower-face seed, upper-face seed) per sparse window.
        threshold: the T used (windows with ``0 < count < T`` are sparse).
        window_count_histogram: ``[max_count + 1]`` int64, how many windows hold each count.
    """

    coords: torch.Tensor
    bounds: torch.Tensor
    counts: torch.Tensor
    windows: "pk.SparseWindows"
    pairs: torch.Tensor
    threshold: float
    window_count_histogram: torch.Tensor

    @property
    def num_windows(self) -> int:
        return int(self.windows.corners.shape[0])

    def members(self, m: int) -> torch.Tensor:
        """``[count_m]`` int64 indices of the examples in sparse window ``m``."""
        return self.windows.members(m)

    def box(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``([K], [K])`` float64 lower and upper corner of sparse window ``m`` in map coordinates."""
        width = (self.bounds[:, 1] - self.bounds[:, 0]) / torch.tensor(self.windows.bins, dtype=torch.float64)
        lo = self.bounds[:, 0] + self.windows.corners[m].to(torch.float64) * width
        return lo, lo + torch.tensor(self.windows.window, dtype=torch.float64) * width

    def to_json(self, m: int) -> dict:
        """Sparse window ``m`` as JSON: corner cell, size, count, box in map coordinates."""
        lo, hi = self.box(m)
        return {"index": m, "corner": self.windows.corners[m].tolist(), "size": list(self.windows.window),
                "count": int(self.windows.counts[m]), "box_lo": lo.tolist(), "box_hi": hi.tolist()}


def _bounds(coords: torch.Tensor) -> torch.Tensor:
    lo = coords.min(dim=0).values
    hi = coords.max(dim=0).values
    same = hi <= lo  # a degenerate axis: widen like numpy, so the grid has a width
    return torch.stack([torch.where(same, lo - 0.5, lo), torch.where(same, hi + 0.5, hi)], dim=1)


def density_map(coords, bins: int | Sequence[int] = 24, window: int | Sequence[int] = 3, stride: int = 1,
                threshold: float | None = None, quantile: float = 0.25, seed: int = 0,
                min_members: int = 1, backend: str | None = None) -> DensityMap:
    """Grid histogram, sliding windows, sparse windows and seed pairs of a reduced map.

    Args:
        coords: ``[N, K]`` coordinates (K = 2 or 3).
        bins: cells per axis (int or K ints) of the grid laid over the bounding box of ``coords``.
        window: window size in cells (int or K ints).
        stride: step between window anchors, in cells.
        threshold: T; default the ``quantile`` of the non-empty windows' counts.
        quantile: used when ``threshold`` is None.
        seed: breaks exact ties between candidate seeds.
        min_members: drop sparse windows with fewer members (2 keeps only windows whose two seeds
            are both inside, where the interpolation provably lands in the window under PCA/SVD).
        backend: kernel backend (None = fastest available).

    Returns:
        :class:`DensityMap`; windows in row-major order of their corner cell.
    """
    x = torch.as_tensor(coords).to(torch.float64)
    if x.dim() != 2 or x.shape[1] not in (2, 3):
        raise ValueError(f"coords must be [N, 2] or [N, 3], got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"coords: a density map needs at least 2 examples, got {x.shape[0]}")
    dims = x.shape[1]
    bins_t = (bins,) * dims if isinstance(bins, int) else tuple(int(b) for b in bins)
    win_t = (window,) * dims if isinstance(window, int) else tuple(int(w) for w in window)
    for name, values in (("bins", bins_t), ("window", win_t)):
        if len(values) != dims or min(values) < 1:
            raise ValueError(f"{name} must be an int >= 1 or {dims} of them, got {values}")
    if any(w > b for w, b in zip(win_t, bins_t)):
        raise ValueError(f"window {win_t} is larger than the grid {bins_t}")
    bounds = _bounds(x)
    counts = pk.grid_histogram(x, bins_t, bounds, backend=backend)
    sums = pk.window_counts(counts, win_t, stride, backend=backend)
    histogram = torch.bincount(sums.reshape(-1))
    windows = pk.sparse_windows(counts, win_t, stride, threshold=threshold, quantile=quantile,
                                points=x, bounds=bounds, backend=backend)
    if min_members > 1:
        keep = (windows.counts >= min_members).nonzero().flatten()
        windows = _select_windows(windows, keep)
    pairs = pk.seed_pairs(x, windows, seed=seed)
    return DensityMap(x, bounds, counts, windows, pairs, float(windows.threshold), histogram)


def _select_windows(windows: "pk.SparseWindows", keep: torch.Tensor) -> "pk.SparseWindows":
    """The sub-list ``keep`` of the sparse windows, with their members (CSR rebuilt)."""
    sizes = windows.offsets[1:] - windows.offsets[:-1]
    members = [windows.indices[windows.offsets[m]:windows.offsets[m + 1]] for m in keep.tolist()]
    offsets = torch.zeros(keep.numel() + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(sizes[keep], 0)
    indices = torch.cat(members) if members else windows.indices[:0]
    return windows._replace(corners=windows.corners[keep], counts=windows.counts[keep], offsets=offsets,
                            indices=indices)


def in_window(dmap: DensityMap, points, window_ids) -> torch.Tensor:
    """``[P]`` bool: whether point ``p`` (``points`` ``[P, K]``) falls in the cells of sparse window
    ``window_ids[p]``, binned exactly as the histogram was (``pk.grid_cells`` with the map's bounds)."""
    pts = torch.as_tensor(points).to(torch.float64)
    ids = torch.as_tensor(window_ids, dtype=torch.int64)
    if pts.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool)
    bins = dmap.windows.bins
    cells = pk.grid_cells(pts, bins, dmap.bounds)  # [P], -1 outside the grid
    coords = []
    rest = cells.clamp(min=0)
    for size in reversed(bins):
        coords.append(rest % size)
        rest = rest // size
    cell = torch.stack(coords[::-1], dim=1)  # [P, K]
    corner = dmap.windows.corners[ids]
    size = torch.tensor(dmap.windows.window)
    return (cells >= 0) & ((cell >= corner) & (cell < corner + size)).all(dim=1)


def interpolated_embeddings(sequences: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[M, d]`` float32 embeddings of interpolated sequences (each ``[L_m, d]``): their sums over
    tokens, the same pooling as :meth:`Embedder.embed`."""
    if not sequences:
        return torch.zeros(0, 0)
    return torch.stack([s.float().sum(dim=0).cpu() for s in sequences])


class Decoder:
    """Decodes embedding sequences into text with the student and a "copy the input" prompt.

    The prompt's token embeddings, then the sequence to decode, then (with a chat template) the end of
    the user turn and the assistant header, are concatenated and passed to ``model.generate`` as
    ``inputs_embeds`` (left-padded batches with an attention mask); greedy decoding.

    Args:
        model, tokenizer: the student (see :func:`prism_kernels.synth.embed.check_embeddable`).
        prompt: the copy instruction.
        max_new_tokens: tokens to generate per sequence.
        batch_size: sequences per ``generate`` call.
    """

    PLACEHOLDER = "\u0000EMBEDDINGS\u0000"

    def __init__(self, model, tokenizer, *, prompt: str = COPY_PROMPT, max_new_tokens: int = 96,
                 batch_size: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.embeddings = check_embeddable(model)
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        self.prefix_ids, self.suffix_ids = self._prompt_ids(prompt)

    def _prompt_ids(self, prompt: str) -> tuple[list[int], list[int]]:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": prompt + self.PLACEHOLDER}],
                                           tokenize=False, add_generation_prompt=True)
            if self.PLACEHOLDER in text:
                before, after = text.split(self.PLACEHOLDER, 1)
                # The template's text already holds its special tokens; tokenize each side on its own
                # so the boundary around the embeddings is exact.
                return (tok(before, add_special_tokens=False)["input_ids"],
                        tok(after, add_special_tokens=False)["input_ids"])
        bos = [tok.bos_token_id] if getattr(tok, "bos_token_id", None) is not None else []
        return bos + tok(prompt, add_special_tokens=False)["input_ids"], tok("\n", add_special_tokens=False)["input_ids"]

    def decode(self, sequences: Sequence[torch.Tensor]) -> list[str]:
        """Texts decoded from ``[L_m, d]`` embedding sequences (one string per sequence)."""
        out: list[str] = []
        for start in range(0, len(sequences), self.batch_size):
            out.extend(self._decode_batch(sequences[start:start + self.batch_size]))
        return out

    def _decode_batch(self, sequences: Sequence[torch.Tensor]) -> list[str]:
        device = next(self.embeddings.parameters()).device
        with torch.no_grad():
            prefix = self.embeddings(torch.tensor([self.prefix_ids], device=device))[0]  # [P, d]
            suffix = self.embeddings(torch.tensor([self.suffix_ids], device=device))[0] if self.suffix_ids else prefix[:0]
            rows = [torch.cat([prefix, s.to(device=device, dtype=prefix.dtype), suffix]) for s in sequences]
            length = max(r.shape[0] for r in rows)
            embeds = torch.zeros(len(rows), length, prefix.shape[1], dtype=prefix.dtype, device=device)
            mask = torch.zeros(len(rows), length, dtype=torch.long, device=device)
            for b, r in enumerate(rows):  # left padding: generation continues from the last column
                embeds[b, length - r.shape[0]:] = r
                mask[b, length - r.shape[0]:] = 1
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
            try:
                generated = self.model.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False,
                                                max_new_tokens=self.max_new_tokens, pad_token_id=pad)
            except (TypeError, ValueError, NotImplementedError) as error:
                raise StudentError(f"student: {type(self.model).__name__} cannot generate from inputs_embeds "
                                   f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from error
        # Decoder-only models given only inputs_embeds return just the new tokens.
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in generated]


# ------------------------------------------------------------------------------------------------
# examples: where the texts come from


@dataclass(frozen=True)
class SeedExample:
    """One example of the data: its row (in the input), prompt text and response."""

    row_id: int
    question: str
    response: str

    @property
    def text(self) -> str:
        """The text that is embedded: the prompt, a newline, the response."""
        return example_text(self.question, self.response)

    def as_example(self) -> dict:
        """``{"question", "answer", "final_answer"}`` for the teacher prompt; the final answer is what
        follows a GSM8K-style ``####`` (else the response's last non-empty line)."""
        answer, final = self.response, ""
        if "####" in answer:
            answer, final = answer.rsplit("####", 1)
        else:
            lines = [ln for ln in answer.splitlines() if ln.strip()]
            final = lines[-1] if lines else ""
        final = final.strip().splitlines()[0] if final.strip() else "(none)"
        return {"question": self.question.strip() or "(empty)", "answer": answer.strip() or "(empty)",
                "final_answer": final}


def example_text(question: str, response: str) -> str:
    """The text EmbedSDG embeds for an example (data or generated): ``question + "\\n" + response``."""
    return f"{question}\n{response}"


class ExampleSource:
    """The examples of the input, streamed for embedding and fetched by position for the seeds.

    Positions ``0..N-1`` count the usable examples (malformed records and records without a response
    are skipped); ``row_ids[i]`` is the input row of position ``i``.
    """

    def iter_examples(self):  # pragma: no cover - interface
        """Yields :class:`SeedExample` in input order."""
        raise NotImplementedError

    def get(self, row_ids: Sequence[int]) -> list[SeedExample]:  # pragma: no cover - interface
        """The examples of the given input rows."""
        raise NotImplementedError

    def identity(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError


class ListSource(ExampleSource):
    """Examples given in memory: ``[(question, response), ...]`` or dicts with question/answer."""

    def __init__(self, examples):
        self.examples = []
        for i, item in enumerate(examples):
            if isinstance(item, dict):
                item = (item.get("question", ""), item.get("answer", ""))
            self.examples.append(SeedExample(i, str(item[0]), str(item[1])))

    def iter_examples(self):
        return iter(self.examples)

    def get(self, row_ids):
        return [self.examples[int(r)] for r in row_ids]

    def identity(self) -> str:
        import hashlib

        digest = hashlib.sha256()
        for e in self.examples:
            digest.update(e.text.encode("utf-8") + b"\0")
        return "list:" + digest.hexdigest()[:16]


class DatasetSource(ExampleSource):
    """Examples read with :mod:`prism_kernels.data` (JSONL, Parquet, CSV, HF), mapped by a FieldMap
    (``--fields``, else detected from the columns)."""

    def __init__(self, paths: Sequence[str], fields: str | None = None, split: str | None = None,
                 batch_rows: int = 1024):
        from prism_kernels.data import detect_fields, open_dataset, parse_fields

        self.dataset = open_dataset(list(paths), split=split)
        self.fields = parse_fields(fields) if fields else detect_fields(self.dataset.columns())
        self.batch_rows = batch_rows
        self.skipped = 0

    def _convert(self, record) -> SeedExample | None:
        if record.data is None:
            return None
        try:
            sample = self.fields.extract(record.data)
        except ValueError:
            return None
        if not sample.response.strip():
            return None
        return SeedExample(record.row_id, sample.prompt_text, sample.response)

    def iter_examples(self):
        self.skipped = 0
        for batch in self.dataset.iter_records(batch_rows=self.batch_rows):
            for record in batch:
                example = self._convert(record)
                if example is None:
                    self.skipped += 1
                else:
                    yield example

    def get(self, row_ids):
        out = []
        for row in row_ids:
            records = [r for batch in self.dataset.iter_records(int(row), int(row) + 1) for r in batch]
            example = self._convert(records[0]) if records else None
            if example is None:
                raise ValueError(f"row {row} of the data is no longer a usable example (did the data change?)")
            out.append(example)
        return out

    def identity(self) -> str:
        return f"{self.dataset.identity()}:{self.fields.describe()}"
