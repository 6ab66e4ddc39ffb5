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

The run (:func:`run_embedsdg`, behind ``prism synth embedsdg``) writes a run directory::

    RUN_DIR/config.json                     what the results depend on + its hash (other settings or
                                            changed data are refused; --overwrite starts again)
    RUN_DIR/embeddings/part-NNNNN.safetensors   embeddings [n_p, d] f32, row_ids [n_p] i64 per input shard
    RUN_DIR/map.safetensors, map.json       coords [N, K] f64 and the reducer's tensors / its metadata
    RUN_DIR/windows.json                    T, the window-count histogram, every sparse window + seed rows
    RUN_DIR/items/item-NNNNNN.json          one finished request: window, seeds, decoded partial, teacher
                                            output, parsed example, map coordinates
    RUN_DIR/manifest.json                   finished embedding shards and items
    RUN_DIR/requests.sqlite                 the teacher's request cache (--cache to share one)
    RUN_DIR/synthetic.jsonl                 parsed examples (question, answer, final_answer + provenance)
    RUN_DIR/summary.json, density.png       counts, in-window fractions; the map

Every file is written atomically, so ``kill -9`` at any point and the same command again resumes:
finished shards and items are kept, and a request that finished before the kill comes from the cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

import prism_kernels as pk

from .embed import Embedder, StudentError, check_embeddable, interpolate, load_student
from .embedsdg_prompts import COPY_PROMPT

__all__ = ["DatasetSource", "DensityMap", "Decoder", "ExampleSource", "ListSource", "SeedExample",
           "add_embedsdg_arguments", "density_map", "example_text", "in_window", "interpolated_embeddings",
           "run_embedsdg"]


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
        newline = tok("\n", add_special_tokens=False)["input_ids"]
        return bos + tok(prompt, add_special_tokens=False)["input_ids"], newline

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
            suffix = (self.embeddings(torch.tensor([self.suffix_ids], device=device))[0] if self.suffix_ids
                      else prefix[:0])
            rows = [torch.cat([prefix, s.to(device=device, dtype=prefix.dtype), suffix]) for s in sequences]
            length = max(r.shape[0] for r in rows)
            embeds = torch.zeros(len(rows), length, prefix.shape[1], dtype=prefix.dtype, device=device)
            mask = torch.zeros(len(rows), length, dtype=torch.long, device=device)
            for b, r in enumerate(rows):  # left padding: generation continues from the last column
                embeds[b, length - r.shape[0]:] = r
                mask[b, length - r.shape[0]:] = 1
            pad = self.tokenizer.pad_token_id
            pad = self.tokenizer.eos_token_id if pad is None else pad
            try:
                generated = self.model.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False,
                                                max_new_tokens=self.max_new_tokens, pad_token_id=pad)
            except (TypeError, ValueError, NotImplementedError) as error:
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise StudentError(f"student: {type(self.model).__name__} cannot generate from inputs_embeds "
                                   f"({type(error).__name__}: {first})") from error
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

    def num_rows(self) -> int:  # pragma: no cover - interface
        """Rows of the input (usable or not)."""
        raise NotImplementedError

    def iter_examples(self, start: int = 0, stop: int | None = None):  # pragma: no cover - interface
        """Yields the usable :class:`SeedExample` of input rows ``[start, stop)`` in input order."""
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

    def num_rows(self) -> int:
        return len(self.examples)

    def iter_examples(self, start: int = 0, stop: int | None = None):
        return iter(self.examples[start:stop])

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

    def num_rows(self) -> int:
        return self.dataset.count()

    def iter_examples(self, start: int = 0, stop: int | None = None):
        for batch in self.dataset.iter_records(start, stop, batch_rows=self.batch_rows):
            for record in batch:
                example = self._convert(record)
                if example is not None:
                    yield example

    def get(self, row_ids):
        out = []
        for row in row_ids:
            records = [r for batch in self.dataset.iter_records(int(row), int(row) + 1) for r in batch]
            example = self._convert(records[0]) if records else None
            if example is None:
                raise _user_error()(f"--data: row {row} is no longer a usable example (did the data change?)")
            out.append(example)
        return out

    def identity(self) -> str:
        return f"{self.dataset.identity()}:{self.fields.describe()}"


# ------------------------------------------------------------------------------------------------
# the run: `prism synth embedsdg`

RUN_FORMAT = "prism_kernels.synth.embedsdg.run/1"

#: What the results depend on; a run directory holding another value of any of these is refused.
_IDENTITY_KEYS = ("data", "split", "fields", "student", "student_tokenizer", "max_length", "dims", "reduce",
                  "perplexity", "bins", "window", "stride", "threshold", "quantile", "min_members", "seed",
                  "baseline", "teacher", "teacher_model", "temperature", "max_tokens", "decode_tokens")


def add_embedsdg_arguments(parser) -> None:
    """Adds the options of ``prism synth embedsdg`` to an argparse parser."""
    from ..data.options import int_at_least

    positive = int_at_least(1)

    d = parser.add_argument_group("data and student")
    d.add_argument("--data", nargs="+", default=None, metavar="DATA",
                   help="(required) JSONL / JSON / Parquet / CSV files, a datasets folder or a cached HF dataset id")
    d.add_argument("--split", default=None, help="split of a HF dataset")
    d.add_argument("--fields", default=None, metavar="SPEC",
                   help="field mapping, e.g. prompt=question,response=answer (default: detected)")
    d.add_argument("--student", default=None, metavar="MODEL",
                   help="(required) local folder or cached HF id of the student causal LM (embeds and decodes)")
    d.add_argument("--student-tokenizer", default=None, help="tokenizer folder (default: the student's)")
    d.add_argument("--max-length", type=positive, default=512, help="tokens kept per example (default: 512)")
    d.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="student device")
    d.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32", help="student dtype")
    d.add_argument("--embed-batch", type=positive, default=64, help="examples per embedding call (default: 64)")
    d.add_argument("--shard-rows", type=positive, default=4096,
                   help="input rows per embedding shard, the unit of resume (default: 4096)")
    d.add_argument("--trust-remote-code", action="store_true", help="allow model code shipped with the student")

    m = parser.add_argument_group("map and sparse regions")
    m.add_argument("--dims", type=int, choices=(2, 3), default=2, help="K, dimensions of the map (default: 2)")
    m.add_argument("--reduce", choices=("pca", "svd", "tsne"), default="pca", help="reduction (default: pca)")
    m.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (default: 30)")
    m.add_argument("--bins", type=positive, default=None, help="grid cells per axis (default: 32 for 2-D, 12 for 3-D)")
    m.add_argument("--window", type=positive, default=None, help="window size in cells (default: 3 for 2-D, 2 for 3-D)")
    m.add_argument("--stride", type=positive, default=1, help="window stride in cells (default: 1)")
    m.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="sparse = windows with 0 < count < T (default: the --quantile of the window counts)")
    m.add_argument("--quantile", type=float, default=0.25,
                   help="quantile of the non-empty windows' counts used as T (default: 0.25)")
    m.add_argument("--min-members", type=positive, default=1,
                   help="skip sparse windows with fewer members (2: both seeds inside; default: 1)")
    m.add_argument("--seed", type=int, default=0, help="seed of the reduction, tie-breaks and sampling")

    t = parser.add_argument_group("teacher and decoding")
    t.add_argument("--teacher", default=None, metavar="URL|local:PATH",
                   help="(required) OpenAI-compatible base URL (key from $OPENAI_API_KEY) or local:PATH")
    t.add_argument("--teacher-model", default=None, help="model name served at --teacher URL")
    t.add_argument("--n", type=positive, default=None, help="(required) examples to generate")
    t.add_argument("--baseline", action="store_true",
                   help="the random-seed baseline: one random seed per request, 'write a similar problem'")
    t.add_argument("--temperature", type=float, default=0.7, help="teacher temperature (default: 0.7)")
    t.add_argument("--max-tokens", type=positive, default=768, help="teacher max new tokens (default: 768)")
    t.add_argument("--decode-tokens", type=positive, default=128,
                   help="tokens the student decodes from an interpolation (default: 128)")
    t.add_argument("--batch", type=positive, default=8, help="windows per decode/teacher step (default: 8)")
    t.add_argument("--concurrency", type=positive, default=8, help="teacher requests in flight (default: 8)")
    t.add_argument("--timeout", type=float, default=120.0, help="seconds per teacher request (default: 120)")
    t.add_argument("--max-retries", type=int, default=6, help="teacher retries on 429/5xx/timeouts (default: 6)")
    t.add_argument("--cache", default=None, metavar="PATH",
                   help="SQLite request cache (default: RUN_DIR/requests.sqlite; share it between runs)")

    r = parser.add_argument_group("run")
    r.add_argument("--out", default=None, metavar="RUN_DIR", help="(required) run directory (resumes when it exists)")
    r.add_argument("--overwrite", action="store_true", help="delete the run in RUN_DIR and start again")
    r.add_argument("--quiet", action="store_true", help="no progress lines")


def _user_error():
    from prism_kernels.data import DataError

    return DataError


def _log(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        import sys

        print(f"[embedsdg] {message}", file=sys.stderr, flush=True)


def _identity(args, source: ExampleSource) -> dict:
    values = {k: getattr(args, k, None) for k in _IDENTITY_KEYS}
    values["data_identity"] = source.identity()  # sizes and mtimes of the files, the field mapping
    # The teacher is the model, not where it is served: a run may resume against another server.
    teacher = str(args.teacher or "")
    values["teacher"] = None if teacher.startswith(("http://", "https://")) else teacher
    values["data"] = list(values["data"]) if isinstance(values["data"], (list, tuple)) else values["data"]
    return values


class _Run:
    """Paths of an EmbedSDG run directory::

        config.json                 identity + hash (a different identity is refused)
        embeddings/part-NNNNN.safetensors   embeddings [n_p, d] f32, row_ids [n_p] i64 per input-row shard
        map.safetensors, map.json   coordinates [N, K] f64, the reducer's tensors / its metadata
        windows.json                the sparse windows with their seeds
        items/item-NNNNNN.json      one finished generation (window, seeds, partial, teacher output, ...)
        manifest.json               finished embedding parts and items
        synthetic.jsonl, summary.json, density.png   written at the end of every invocation
    """

    def __init__(self, root):
        from pathlib import Path

        self.root = Path(root)
        self.lock = None  # the open lock file while this process works on the run

    def path(self, *parts):
        return self.root.joinpath(*parts)

    def part(self, p: int):
        return self.path("embeddings", f"part-{p:05d}.safetensors")

    def item(self, j: int):
        return self.path("items", f"item-{j:06d}.json")


def _read_json(path):
    import json

    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _prepare_run(args, run: _Run, source: ExampleSource) -> dict:
    import shutil

    from ..score.rundir import config_hash, lock_directory, write_json

    identity = _identity(args, source)
    digest = config_hash(identity)
    config_path = run.path("config.json")
    if args.overwrite and run.root.exists():
        if config_path.exists() or not any(run.root.iterdir()):
            shutil.rmtree(run.root)
        else:
            raise _user_error()(f"--out {run.root}: not an EmbedSDG run directory (no config.json); "
                                "refusing to delete it with --overwrite")
    run.lock = lock_directory(run.root, "prism synth embedsdg")  # released by the OS even after kill -9
    if config_path.exists():
        old = _read_json(config_path)
        if old.get("format") != RUN_FORMAT:
            raise _user_error()(f"--out {run.root}: config.json is not an EmbedSDG run ({old.get('format')})")
        if old.get("hash") != digest:
            differ = [k for k in identity if old.get("identity", {}).get(k) != identity[k]]
            raise _user_error()(f"--out {run.root} holds a run with other settings "
                                f"({', '.join(differ) or 'format'}); use another --out, the same options, "
                                "or --overwrite")
        # A writer killed mid-write leaves its temporary file (the target is intact): remove them.
        for folder in (run.root, run.path("embeddings"), run.path("items")):
            for stale in folder.glob(".*.tmp") if folder.is_dir() else ():
                stale.unlink(missing_ok=True)
    elif any(not p.name.startswith(("requests.sqlite", ".")) for p in run.root.iterdir()):
        raise _user_error()(f"--out {run.root} exists and is not an EmbedSDG run directory")
    else:
        run.root.mkdir(parents=True, exist_ok=True)
        write_json(config_path, {"format": RUN_FORMAT, "hash": digest, "identity": identity})
    return {"hash": digest, "identity": identity}


def _check_args(args, need_data: bool = True) -> None:
    err = _user_error()
    missing = [flag for flag, value in (("--data DATA", args.data if need_data else True),
                                        ("--student MODEL", args.student), ("--teacher URL|local:PATH", args.teacher),
                                        ("--n N", args.n), ("--out RUN_DIR", args.out)) if not value]
    if missing:
        raise err(f"missing {', '.join(missing)} (or run the offline demo: prism synth embedsdg --demo)")
    if args.threshold is None and not 0.0 <= args.quantile <= 1.0:
        raise err(f"--quantile must be in [0, 1], got {args.quantile}")
    if args.threshold is not None and args.threshold <= 0:
        raise err(f"--threshold must be > 0, got {args.threshold}")
    bins = args.bins or (32 if args.dims == 2 else 12)
    window = args.window or (3 if args.dims == 2 else 2)
    if window > bins:
        raise err(f"--window {window} is larger than --bins {bins}")
    args.bins, args.window = bins, window
    if args.temperature < 0:
        raise err(f"--temperature must be >= 0, got {args.temperature}")
    if args.perplexity <= 0:
        raise err(f"--perplexity must be > 0, got {args.perplexity}")


def _open_source(args) -> ExampleSource:
    return DatasetSource(args.data, fields=args.fields, split=args.split)


def _embed_all(args, run: _Run, source: ExampleSource, embedder: Embedder, manifest: dict):
    """``([N, d] float32 embeddings, [N] int64 input rows)``, embedding shard by shard (resumable)."""
    from safetensors.torch import load_file, save_file

    from ..score.rundir import atomic_write, write_json

    rows = source.num_rows()
    shard = int(args.shard_rows)
    parts = max(1, math.ceil(rows / shard))
    done = set(manifest.setdefault("parts", []))
    chunks, ids = [], []
    for p in range(parts):
        path = run.part(p)
        if p in done and path.exists():
            tensors = load_file(str(path))
        else:
            examples = list(source.iter_examples(p * shard, min(rows, (p + 1) * shard)))
            vectors = embedder.embed([e.text for e in examples]) if examples else torch.zeros(0, embedder.dim)
            tensors = {"embeddings": vectors.contiguous(),
                       "row_ids": torch.tensor([e.row_id for e in examples], dtype=torch.int64)}
            atomic_write(path, lambda tmp, t=tensors: save_file(t, tmp))
            done.add(p)
            manifest["parts"] = sorted(done)
            write_json(run.path("manifest.json"), manifest)
            _log(args, f"embedded rows {p * shard}..{min(rows, (p + 1) * shard)} ({p + 1}/{parts} shards)")
        chunks.append(tensors["embeddings"])
        ids.append(tensors["row_ids"])
    embeddings, row_ids = torch.cat(chunks), torch.cat(ids)
    if embeddings.shape[0] < 4:
        raise _user_error()(f"--data: {embeddings.shape[0]} usable examples (with a non-empty response); "
                            "EmbedSDG needs at least 4")
    return embeddings, row_ids


def _fit_map(args, run: _Run, embeddings: torch.Tensor):
    """The fitted reducer and ``[N, K]`` coordinates, fitted once and reloaded on resume."""
    from safetensors.torch import load_file, save_file

    from ..score.rundir import atomic_write, write_json
    from .reduce import fit_reducer, load_reducer

    tensors_path, meta_path = run.path("map.safetensors"), run.path("map.json")
    if tensors_path.exists() and meta_path.exists():
        tensors = load_file(str(tensors_path))
        meta = _read_json(meta_path)
        state = {k[len("reducer."):]: v for k, v in tensors.items() if k.startswith("reducer.")}
        return load_reducer(meta["reducer"], state, embeddings=embeddings), tensors["coords"]
    options = {"perplexity": args.perplexity} if args.reduce == "tsne" else {}
    reducer, coords = fit_reducer(embeddings, args.reduce, args.dims, seed=args.seed, **options)
    tensors = {"coords": coords.contiguous(), **{f"reducer.{k}": v.contiguous() for k, v in reducer.state().items()}}
    atomic_write(tensors_path, lambda tmp: save_file(tensors, tmp))
    write_json(meta_path, {"reducer": reducer.meta(), "n": int(coords.shape[0])})
    return reducer, coords


def _plan(args, dmap: DensityMap, n_examples: int) -> list[tuple[int, int]]:
    """Jobs ``(target, repeat)``: EmbedSDG targets sparse windows, sparsest first (then row-major),
    cycling with a new sample index when --n exceeds the windows; the baseline targets example
    positions in a seeded random order."""
    if args.baseline:
        order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(args.seed)).tolist()
    else:
        counts = dmap.windows.counts.tolist()
        order = sorted(range(len(counts)), key=lambda m: (counts[m], m))
    if not order:
        raise _user_error()(
            f"no sparse windows (0 < count < T = {dmap.threshold:g}) on the {args.bins}^{args.dims} grid with "
            f"{args.window}-cell windows; raise --quantile or --threshold, or use finer --bins")
    return [(order[j % len(order)], j // len(order)) for j in range(args.n)]


def run_embedsdg(args, source: ExampleSource | None = None) -> dict:
    """Runs ``prism synth embedsdg`` with parsed ``args`` (see :func:`add_embedsdg_arguments`); resumes
    a killed run in ``args.out``. ``source`` replaces ``--data`` (e.g. a :class:`ListSource` of
    in-memory examples). Returns the summary (also written to ``RUN_DIR/summary.json``).

    User mistakes (options, data, a run directory with other settings, a student that cannot take
    inputs_embeds) raise :class:`prism_kernels.data.DataError` with one line; a teacher that stays
    down raises the generator's error after its retries, and the same command resumes.
    """
    _check_args(args, need_data=source is None)
    run = _Run(args.out)
    source = source if source is not None else _open_source(args)
    try:
        config = _prepare_run(args, run, source)
        return _run_locked(args, run, source, config)
    finally:
        if run.lock is not None:
            run.lock.close()


def _run_locked(args, run: _Run, source: ExampleSource, config: dict) -> dict:
    import os

    from ..score.rundir import atomic_write, write_json
    from .format import format_examples
    from .generators import generator_from_cli

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_student(args.student, args.student_tokenizer, device=device, dtype=args.dtype,
                                    trust_remote_code=args.trust_remote_code)
    embedder = Embedder(model, tokenizer, max_length=args.max_length, batch_size=args.embed_batch)
    decoder = None if args.baseline else Decoder(model, tokenizer, max_new_tokens=args.decode_tokens,
                                                 batch_size=args.batch)
    manifest_path = run.path("manifest.json")
    manifest = _read_json(manifest_path) if manifest_path.exists() else {"format": RUN_FORMAT}

    embeddings, row_ids = _embed_all(args, run, source, embedder, manifest)
    reducer, coords = _fit_map(args, run, embeddings)
    dmap = density_map(coords, args.bins, args.window, args.stride, args.threshold, args.quantile,
                       seed=args.seed, min_members=args.min_members)
    _log(args, f"{coords.shape[0]} examples, {args.reduce} to {args.dims}-D, {args.bins}^{args.dims} grid, "
               f"T = {dmap.threshold:g}: {dmap.num_windows} sparse windows")
    write_json(run.path("windows.json"), {
        "threshold": dmap.threshold, "bounds": dmap.bounds.tolist(), "bins": list(dmap.windows.bins),
        "window": list(dmap.windows.window), "stride": list(dmap.windows.stride),
        "window_count_histogram": dmap.window_count_histogram.tolist(),
        "windows": [{**dmap.to_json(m), "seed_rows": [int(row_ids[i]) for i in dmap.pairs[m].tolist()]}
                    for m in range(dmap.num_windows)]})
    jobs = _plan(args, dmap, coords.shape[0])

    format_hint = format_examples([{"question": "<the new problem>", "answer": "<the step-by-step solution>",
                                    "final_answer": "<the final answer only>"}])
    cache = args.cache or os.fspath(run.path("requests.sqlite"))
    teacher = generator_from_cli(args.teacher, args.teacher_model, cache, concurrency=args.concurrency,
                                 timeout=args.timeout, max_retries=args.max_retries, device=device)
    done = set(manifest.setdefault("items", []))
    pending = [j for j in range(len(jobs)) if not (j in done and run.item(j).exists())]
    if len(pending) < len(jobs):
        _log(args, f"resuming: {len(jobs) - len(pending)} of {len(jobs)} items already done")
    try:
        for start in range(0, len(pending), args.batch):
            chunk = pending[start:start + args.batch]
            items = _run_chunk(args, chunk, jobs, dmap, coords, row_ids, source, embedder, decoder, reducer,
                               teacher, format_hint)
            for j, item in zip(chunk, items):
                write_json(run.item(j), item)
                done.add(j)
            manifest["items"] = sorted(done)
            write_json(manifest_path, manifest)
            _log(args, f"{len(done & set(range(len(jobs))))}/{len(jobs)} items "
                       f"({sum(1 for i in items if i['parsed'])}/{len(items)} parsed in this step)")
    finally:
        teacher.close()
    return _finish(args, run, config, jobs, dmap, coords, reducer, embeddings.shape[1], atomic_write, write_json)


def _run_chunk(args, chunk, jobs, dmap, coords, row_ids, source, embedder, decoder, reducer, teacher,
               format_hint) -> list[dict]:
    """Generates the items of one chunk of jobs: seeds -> (interpolate -> decode) -> teacher -> parse ->
    embed and place the generated example on the map."""
    from .embedsdg_prompts import baseline_messages, teacher_messages
    from .format import format_examples, parse_examples
    from .generators import GenerationRequest

    positions = []  # per job: the seeds' positions in the embedding table
    for j in chunk:
        target, _ = jobs[j]
        positions.append([target] if args.baseline else dmap.pairs[target].tolist())
    flat = sorted({p for ps in positions for p in ps})
    fetched = dict(zip(flat, source.get([int(row_ids[p]) for p in flat])))
    partials: list[str | None] = [None] * len(chunk)
    interpolated: list[list[float] | None] = [None] * len(chunk)
    if not args.baseline:
        seqs = []
        for ps in positions:
            a, b = embedder.sequences([fetched[ps[0]].text, fetched[ps[1]].text])
            seqs.append(interpolate(a, b))
        partials = decoder.decode(seqs)
        interpolated = reducer.transform(interpolated_embeddings(seqs)).tolist()
    requests = []
    for ps, partial, j in zip(positions, partials, chunk):
        seeds = [format_examples([fetched[p].as_example()]) for p in ps]
        messages = (baseline_messages(seeds[0], format_hint) if args.baseline
                    else teacher_messages(seeds[0], seeds[1], partial, format_hint))
        requests.append(GenerationRequest(messages=messages, temperature=args.temperature, max_tokens=args.max_tokens,
                                          seed=args.seed, sample_index=jobs[j][1]))
    generations = teacher.generate(requests)
    items, parsed_examples = [], []
    for k, (j, ps, generation) in enumerate(zip(chunk, positions, generations)):
        examples, unparsable = parse_examples(generation.text)
        target, repeat = jobs[j]
        item = {"item": j, "method": "baseline" if args.baseline else "embedsdg", "repeat": repeat,
                "window": None if args.baseline else dmap.to_json(target),
                "seeds": [{"position": p, "row_id": fetched[p].row_id, "question": fetched[p].question,
                           "response": fetched[p].response, "coords": coords[p].tolist()} for p in ps],
                "decoded_partial": partials[k], "interpolated_coords": interpolated[k],
                "teacher_output": generation.text, "generator": teacher.model_id,
                "finish_reason": generation.finish_reason, "parsed": bool(examples),
                "examples_in_output": len(examples), "unparsable_blocks": unparsable}
        if examples:
            item.update(examples[0].to_dict())
            parsed_examples.append((k, examples[0]))
        items.append(item)
    if parsed_examples:
        vectors = embedder.embed([example_text(e.question, e.answer) for _, e in parsed_examples])
        placed = reducer.transform(vectors)
        for (k, _), point in zip(parsed_examples, placed):
            items[k]["coords"] = point.tolist()
    if not args.baseline:
        targets = torch.tensor([jobs[j][0] for j in chunk])
        inside = in_window(dmap, torch.tensor(interpolated, dtype=torch.float64), targets).tolist()
        for item, flag in zip(items, inside):
            item["interpolated_in_window"] = bool(flag)
        for k, _ in parsed_examples:
            items[k]["generated_in_window"] = bool(in_window(dmap, torch.tensor([items[k]["coords"]]),
                                                             targets[k:k + 1])[0])
    return items


def _finish(args, run, config, jobs, dmap, coords, reducer, dim, atomic_write, write_json) -> dict:
    """synthetic.jsonl (the parsed examples with provenance, in job order), summary.json, density.png."""
    import json

    items = [_read_json(run.item(j)) for j in range(len(jobs)) if run.item(j).exists()]
    good = [i for i in items if i["parsed"]]
    lines = []
    for item in good:
        row = {"question": item["question"], "answer": item["answer"], "final_answer": item["final_answer"]}
        row.update({k: v for k, v in item.items() if k not in row})
        lines.append(json.dumps(row, ensure_ascii=False))
    atomic_write(run.path("synthetic.jsonl"), "".join(line + "\n" for line in lines))

    def fraction(key, subset):
        flags = [i[key] for i in subset if key in i]
        return (sum(flags) / len(flags)) if flags else None

    two = [i for i in items if i.get("window") and i["window"]["count"] >= 2]
    summary = {
        "method": "baseline" if args.baseline else "embedsdg", "examples": int(coords.shape[0]), "embedding_dim": dim,
        "reduce": args.reduce, "dims": args.dims, "bins": args.bins, "window": args.window, "stride": args.stride,
        "threshold": dmap.threshold, "sparse_windows": dmap.num_windows, "requested": len(jobs),
        "done": len(items), "parsed": len(good), "unparsable": len(items) - len(good),
        "interpolated_in_window": fraction("interpolated_in_window", items),
        "interpolated_in_window_two_member_windows": fraction("interpolated_in_window", two),
        "generated_in_window": fraction("generated_in_window", good),
        "config_hash": config["hash"],
    }
    write_json(run.path("summary.json"), summary)
    from ..plots.density import plot_density

    seeds = [[s["coords"] for s in i["seeds"]] for i in items]
    plot_density(run.path("density.png"), coords, dmap.bounds, dmap.counts,
                 windows=[dmap.box(m) for m in range(dmap.num_windows)],
                 seeds=seeds,
                 interpolated=[i["interpolated_coords"] for i in items if i.get("interpolated_coords")],
                 generated=[i["coords"] for i in good if "coords" in i],
                 title=f"EmbedSDG{' baseline' if args.baseline else ''}: {args.reduce} {args.dims}-D, "
                       f"T = {dmap.threshold:g}, {dmap.num_windows} sparse windows, {len(good)} generated")
    _log(args, f"done: {len(good)} examples in {run.path('synthetic.jsonl')} ({len(items) - len(good)} unparsable)")
    return summary
