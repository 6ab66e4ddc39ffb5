"""Readers: several inputs opened as one dataset, streamed as lists of Records with global row ids.

Formats (from the extension, or `fmt`):
- JSONL (.jsonl, .ndjson, .json whose first character is not "[", and their .gz): read line by line, each
  line parsed on its own, so a malformed line becomes a Record with `error` set (the others are unaffected).
  Blank lines are not records (they get no row id) but count in the line numbers.
- JSON arrays (.json starting with "["): parsed whole (the one format read into memory; convert large
  ones to JSONL); `line` is the line where each element starts.
- Parquet (.parquet, .pq): pyarrow record batches (`ParquetFile.iter_batches`), seeking by row group.
- CSV (.csv, .tsv, and .gz): the first row is the header; every value stays text. Read with the standard
  library's C csv parser over a byte-counting line stream, because it gives every record its exact first
  line (quoted values with newlines are common in LLM data, and pyarrow's CSV reader gives valid rows no
  line numbers). A row with the wrong number of fields becomes a Record with `error`.
- Hugging Face datasets: a folder written by `datasets.save_to_disk` (a DatasetDict needs `split` unless it
  has one split), or a hub id read from the local cache with `split`, offline (never downloads).
Row ids count every record, bad ones too, in input order across the inputs. JSONL and CSV sources keep
a sparse byte-offset index (one checkpoint every 256 records, built while streaming or by
`Dataset.index()`), so `iter_records(start=...)` seeks instead of parsing the skipped rows, and memory
stays flat in the number of rows.
"""

from __future__ import annotations

import bisect
import contextlib
import glob
import gzip
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

from .errors import DataError

STRIDE = 256  # records between two checkpoints of the JSONL / CSV byte-offset index
_COLUMN_PROBE = 100  # records read to list a schemaless source's columns
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Record:
    """One input row.

    row_id: 0-based position in the concatenated input (bad records count too).
    source: the path (or HF id) as given by the user.
    line: JSONL/CSV/JSON: 1-based line number of the record in its file; Parquet/HF: 0-based row index
        within that source.
    data: the parsed record (a dict); None when malformed.
    error: why the record is malformed (e.g. "invalid JSON: Expecting value at column 3"), else None.
    """

    row_id: int
    source: str
    line: int
    data: dict | None
    error: str | None = None


@dataclass(frozen=True)
class SourceInfo:
    """One input: `path` as given, `kind` ("jsonl" | "json" | "parquet" | "csv" | "hf") and a cheap
    `identity` for the run config (size:mtime_ns for files, the dataset fingerprint for HF data)."""

    path: str
    kind: str
    identity: str


def _one_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _file_identity(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"


def _json_type(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


class _Source:
    """A readable input. iter_rows(start, stop, batch_rows) yields lists of (index, line, data, error)
    tuples with 0-based indices local to the source."""

    info: SourceInfo

    def known_count(self) -> int | None:
        return None

    def count(self) -> int:
        raise NotImplementedError

    def columns(self) -> list[str]:
        raise NotImplementedError

    def iter_rows(self, start: int, stop: int | None, batch_rows: int) -> Iterator[list[tuple]]:
        raise NotImplementedError

    def _columns_from_rows(self) -> list[str]:
        seen: dict[str, None] = {}
        n = 0
        for rows in self.iter_rows(0, None, _COLUMN_PROBE):
            for _, _, data, _ in rows:
                if data is not None:
                    seen.update(dict.fromkeys(map(str, data)))
                    n += 1
            if n >= _COLUMN_PROBE:
                break
        return list(seen)


class _IndexedText(_Source):
    """Shared by JSONL and CSV: the file is read as binary lines; `_ckpts[j]` = (byte offset, lines
    before it) of the start of record j * STRIDE (the index is filled in while streaming)."""

    def __init__(self, path: str, kind: str):
        self.path = path
        self.info = SourceInfo(path, kind, _file_identity(path))
        self._gz = path.endswith(".gz")
        self._ckpts: list[tuple[int, int]] = [(0, 0)]
        self._count: int | None = None
        self._lock = threading.Lock()

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _open(self):
        return gzip.open(self.path, "rb") if self._gz else open(self.path, "rb")

    def _seek(self, start: int) -> tuple[int, int, int]:
        """(record index, byte offset, lines before) of the last checkpoint at or before `start`."""
        with self._lock:
            j = min(start // STRIDE, len(self._ckpts) - 1)
            off, lines = self._ckpts[j]
        return j * STRIDE, off, lines

    def _note(self, rec: int, off: int, lines: int) -> None:
        if rec % STRIDE == 0:
            with self._lock:
                if rec // STRIDE == len(self._ckpts):
                    self._ckpts.append((off, lines))

    def known_count(self) -> int | None:
        return self._count

    def count(self) -> int:
        if self._count is None:
            for _ in self.iter_rows(1 << 62, None, 1):  # skips every record unparsed, sets _count at EOF
                pass
        return self._count  # type: ignore[return-value]


class _JsonlSource(_IndexedText):
    def __init__(self, path: str):
        super().__init__(path, "jsonl")

    @staticmethod
    def _parse(raw: bytes) -> tuple[dict | None, str | None]:
        try:
            data = json.loads(raw)
        except UnicodeDecodeError as e:
            return None, f"invalid UTF-8 at byte {e.start}"
        except json.JSONDecodeError as e:
            return None, f"invalid JSON: {e.msg} at column {e.colno}"
        except (ValueError, RecursionError) as e:
            return None, f"invalid JSON: {e}"
        if not isinstance(data, dict):
            return None, f"not a JSON object (a JSON {_json_type(data)})"
        return data, None

    def iter_rows(self, start, stop, batch_rows):
        rec, off, lineno = self._seek(start)
        batch: list[tuple] = []
        with self._open() as f:
            f.seek(off)
            for raw in f:
                pos = off
                off += len(raw)
                lineno += 1
                if pos == 0 and raw.startswith(_BOM):
                    raw = raw[3:]
                if not raw.strip():
                    continue  # blank lines are not records
                self._note(rec, pos, lineno - 1)
                if rec >= start:
                    if stop is not None and rec >= stop:
                        break
                    data, error = self._parse(raw)
                    batch.append((rec, lineno, data, error))
                    if len(batch) >= batch_rows:
                        yield batch
                        batch = []
                rec += 1
            else:
                self._count = rec
        if batch:
            yield batch

    def columns(self):
        return self._columns_from_rows()


class _CsvSource(_IndexedText):
    def __init__(self, path: str, delimiter: str):
        super().__init__(path, "csv")
        self.delimiter = delimiter
        import csv

        csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # long LLM responses
        self.header: list[str] = []
        reader, state = self._reader(0, 0)
        with reader[1]:
            for row in reader[0]:
                if row:
                    self.header = row
                    break
            self._ckpts = [(state[0], state[1])]  # record 0 starts after the header
        if self.header and self.header[0].startswith("\ufeff"):
            self.header[0] = self.header[0][1:]
        dup = next((c for i, c in enumerate(self.header) if c in self.header[:i]), None)
        if dup is not None:
            raise DataError(f"{path}: the CSV header names column {dup!r} twice")

    def _reader(self, off: int, lineno: int):
        """A csv reader positioned at byte `off`, and a live [offset, lines consumed, bad line] state."""
        import csv

        f = self._open()
        f.seek(off)
        state = [off, lineno, None]

        def lines():
            for raw in f:
                state[0] += len(raw)
                state[1] += 1
                try:
                    yield raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    state[2] = f"invalid UTF-8 in line {state[1]} at byte {e.start}"
                    yield raw.decode("utf-8", "replace")

        return (csv.reader(lines(), delimiter=self.delimiter), f), state

    def iter_rows(self, start, stop, batch_rows):
        import csv

        rec, off, lineno = self._seek(start)
        (reader, f), state = self._reader(off, lineno)
        n = len(self.header)
        batch: list[tuple] = []
        with f:
            while True:
                pos, first = state[0], state[1] + 1
                state[2] = None
                try:
                    row = next(reader)
                    error = state[2]
                except StopIteration:
                    self._count = rec
                    break
                except csv.Error as e:
                    row, error = None, f"invalid CSV: {e}"
                if row == []:
                    continue  # blank lines are not records
                self._note(rec, pos, first - 1)
                if rec >= start:
                    if stop is not None and rec >= stop:
                        break
                    data = None
                    if error is None and len(row) != n:
                        error = f"expected {n} fields (as the header), got {len(row)}"
                    if error is None:
                        data = dict(zip(self.header, row))
                    batch.append((rec, first, data, error))
                    if len(batch) >= batch_rows:
                        yield batch
                        batch = []
                rec += 1
        if batch:
            yield batch

    def columns(self):
        return list(self.header)


class _JsonArraySource(_Source):
    """A .json file holding one array of objects: parsed whole (element by element, for line numbers)."""

    def __init__(self, path: str):
        self.path = path
        self.info = SourceInfo(path, "json", _file_identity(path))
        self._rows: list[tuple] | None = None

    def _load(self) -> list[tuple]:
        if self._rows is None:
            opener = gzip.open if self.path.endswith(".gz") else open
            with opener(self.path, "rt", encoding="utf-8-sig") as f:
                text = f.read()
            dec = json.JSONDecoder()
            ws = " \t\r\n"
            i = len(text) - len(text.lstrip(ws)) + 1  # after "["
            rows, line, scanned = [], 1, 0

            def at(pos):
                nonlocal line, scanned
                line += text.count("\n", scanned, pos)
                scanned = pos
                return line

            while True:
                while i < len(text) and text[i] in ws:
                    i += 1
                if i < len(text) and text[i] == "]" and not rows:
                    break
                try:
                    value, end = dec.raw_decode(text, i)
                except json.JSONDecodeError as e:
                    raise DataError(f"{self.path}:{at(min(e.pos, len(text)))}: invalid JSON array: {e.msg}") from None
                ln = at(i)
                if isinstance(value, dict):
                    rows.append((len(rows), ln, value, None))
                else:
                    rows.append((len(rows), ln, None, f"not a JSON object (a JSON {_json_type(value)})"))
                i = end
                while i < len(text) and text[i] in ws:
                    i += 1
                if i < len(text) and text[i] == ",":
                    i += 1
                    continue
                if i < len(text) and text[i] == "]":
                    break
                raise DataError(f"{self.path}:{at(min(i, len(text)))}: invalid JSON array: expected ',' or ']'")
            self._rows = rows
        return self._rows

    def known_count(self):
        return None if self._rows is None else len(self._rows)

    def count(self):
        return len(self._load())

    def columns(self):
        return self._columns_from_rows()

    def iter_rows(self, start, stop, batch_rows):
        rows = self._load()
        stop = len(rows) if stop is None else min(stop, len(rows))
        for a in range(start, stop, batch_rows):
            yield rows[a:min(a + batch_rows, stop)]


class _ArrowSource(_Source):
    """Rows [start, stop) of a row-addressable arrow source, as to_pylist dicts with 0-based row lines."""

    def known_count(self):
        return self.count()


class _ParquetSource(_ArrowSource):
    def __init__(self, path: str):
        import pyarrow.parquet as pq

        self.path = path
        self.info = SourceInfo(path, "parquet", _file_identity(path))
        try:
            meta = pq.ParquetFile(path).metadata
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a non-Parquet file
            raise DataError(f"{path}: not a readable Parquet file ({_one_line(e)})") from None
        self._n = meta.num_rows
        self._group_starts = [0]
        for g in range(meta.num_row_groups):
            self._group_starts.append(self._group_starts[-1] + meta.row_group(g).num_rows)
        self._names = list(meta.schema.to_arrow_schema().names)

    def count(self):
        return self._n

    def columns(self):
        return list(self._names)

    def iter_rows(self, start, stop, batch_rows):
        import pyarrow.parquet as pq

        stop = self._n if stop is None else min(stop, self._n)
        if start >= stop:
            return
        g = bisect.bisect_right(self._group_starts, start) - 1  # the row group holding `start`
        row = self._group_starts[g]
        pf = pq.ParquetFile(self.path)
        groups = list(range(g, len(self._group_starts) - 1))
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, use_threads=False):
            n = batch.num_rows
            lo, hi = max(start - row, 0), min(n, stop - row)
            if hi > lo:
                yield [(row + lo + i, row + lo + i, d, None)
                       for i, d in enumerate(batch.slice(lo, hi - lo).to_pylist())]
            row += n
            if row >= stop:
                break


class _HFSource(_ArrowSource):
    def __init__(self, ds, path: str):
        self.path = path
        self._ds = ds.with_format("arrow")
        self.info = SourceInfo(path, "hf", str(getattr(ds, "_fingerprint", "")))

    def count(self):
        return len(self._ds)

    def columns(self):
        return list(self._ds.column_names)

    def iter_rows(self, start, stop, batch_rows):
        stop = len(self._ds) if stop is None else min(stop, len(self._ds))
        for a in range(start, stop, batch_rows):
            b = min(a + batch_rows, stop)
            yield [(a + i, a + i, d, None) for i, d in enumerate(self._ds[a:b].to_pylist())]


@contextlib.contextmanager
def _hf_offline():
    """Makes `datasets` and `huggingface_hub` offline for the duration (so a hub id is read from the
    local cache or fails fast, never downloads)."""
    import datasets
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield datasets
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _pick_split(dd, split: str | None, where: str):
    names = list(dd.keys())
    if split is None:
        if len(names) == 1:
            return dd[names[0]]
        raise DataError(f"{where} has splits {', '.join(names)}; pass --split")
    if split not in dd:
        raise DataError(f"{where} has no split {split!r}; splits: {', '.join(names)}")
    return dd[split]


def _open_hf_folder(path: str, split: str | None) -> _Source:
    import datasets

    try:
        ds = datasets.load_from_disk(path)
    except Exception as e:
        raise DataError(f"{path}: not a folder written by datasets.save_to_disk ({_one_line(e)}); for a folder "
                        f"of data files pass a glob such as '{os.path.join(path, '*.parquet')}'") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = _pick_split(ds, split, path)
    return _HFSource(ds, path)


def _open_hf_hub(name: str, split: str | None) -> _Source:
    hint = (f"{name!r} is not a file or folder, and not a dataset in the local Hugging Face cache (read "
            f"offline); pass a local JSONL/Parquet/CSV path or a folder written by datasets.save_to_disk")
    with _hf_offline() as datasets:
        try:
            ds = datasets.load_dataset(name)  # every cached split (memory-mapped); the split is picked below
        except Exception as e:
            raise DataError(f"{hint} ({_one_line(e)})") from None
    if isinstance(ds, datasets.DatasetDict):
        ds = _pick_split(ds, split, name)
    return _HFSource(ds, name)


_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet",
               ".csv": "csv", ".tsv": "tsv"}
FORMATS = ("jsonl", "json", "parquet", "csv", "tsv", "hf")


def _format_of(path: str) -> str | None:
    base = path[:-3] if path.endswith(".gz") else path
    return _EXTENSIONS.get(os.path.splitext(base)[1].lower())


def _starts_with_bracket(path: str) -> bool:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        head = f.read(4096).lstrip(_BOM + b" \t\r\n")
    return head[:1] == b"["


def _open_one(path: str, split: str | None, fmt: str | None) -> _Source:
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"data path must be a string, got {path!r}")
    path = os.fspath(path)
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; formats: {', '.join(FORMATS)}")
    if fmt == "hf" and not os.path.exists(path):
        return _open_hf_hub(path, split)
    if os.path.isdir(path):
        if fmt not in (None, "hf"):
            raise DataError(f"{path} is a folder, not a {fmt} file")
        return _open_hf_folder(path, split)
    if not os.path.exists(path):
        if _format_of(path) is None and fmt is None:
            return _open_hf_hub(path, split)
        raise DataError(f"data file not found: {path}")
    kind = fmt or _format_of(path)
    if kind is None:
        raise DataError(f"{path}: unknown data format (extension); use .jsonl, .json, .parquet, .csv, .tsv "
                        f"(optionally .gz) or pass the format explicitly")
    try:
        with open(path, "rb") as f:
            f.read(1)
        if kind == "json":
            kind = "json" if _starts_with_bracket(path) else "jsonl"
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    except EOFError as e:  # a truncated .gz
        raise DataError(f"cannot read {path}: {e}") from None
    if kind == "jsonl":
        return _JsonlSource(path)
    if kind == "json":
        return _JsonArraySource(path)
    if kind == "parquet":
        return _ParquetSource(path)
    if kind in ("csv", "tsv"):
        return _CsvSource(path, "\t" if kind == "tsv" else ",")
    raise DataError(f"{path}: format {kind!r} needs a folder written by datasets.save_to_disk")


class Dataset:
    """Several inputs read as one dataset (see the module docstring). Picklable (sources hold paths and
    their small index, no open files)."""

    def __init__(self, sources: Sequence[_Source]):
        self._sources = list(sources)
        self.sources: list[SourceInfo] = [s.info for s in self._sources]
        self._columns: list[str] | None = None

    def __repr__(self) -> str:
        return f"Dataset({', '.join(f'{s.path} ({s.kind})' for s in self.sources)})"

    def identity(self) -> str:
        """sha256 hex of the sources' (path, kind, identity), in order: changes when a file is modified."""
        text = json.dumps([[s.path, s.kind, s.identity] for s in self.sources])
        return hashlib.sha256(text.encode()).hexdigest()

    def columns(self) -> list[str]:
        """Top-level field names (schemas for Parquet/CSV/HF, the keys of the first 100 records of
        JSONL/JSON), the union over the sources in first-seen order."""
        if self._columns is None:
            seen: dict[str, None] = {}
            for s in self._sources:
                seen.update(dict.fromkeys(s.columns()))
            self._columns = list(seen)
        return list(self._columns)

    def count(self) -> int:
        """Total rows (bad records included). One streaming pass over JSONL/CSV (unparsed, building the
        seek index), cached; metadata for Parquet/HF."""
        return sum(s.count() for s in self._sources)

    def index(self) -> list[int]:
        """Builds every source's seek index now (one pass) and returns the per-source row counts."""
        return [s.count() for s in self._sources]

    def iter_records(self, start: int = 0, stop: int | None = None, batch_rows: int = 1024) -> Iterator[list[Record]]:
        """Streams rows [start, stop) in input order as lists of `batch_rows` Records (the last may be
        shorter; lists span source boundaries). Never holds more than about one batch per source in
        memory; start > 0 seeks (JSONL/CSV: byte-offset index, Parquet: row groups, HF: slicing) without
        parsing the skipped rows."""
        for name, v in (("start", start), ("batch_rows", batch_rows)) + ((("stop", stop),) if stop is not None else ()):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise DataError(f"{name} must be a non-negative integer, got {v!r}")
        if batch_rows < 1:
            raise DataError(f"batch_rows must be >= 1, got {batch_rows}")
        if stop is not None and stop <= start:
            return
        buf: list[Record] = []
        base = 0
        for src in self._sources:
            if stop is not None and base >= stop:
                break
            if start > base and start >= base + src.count():
                base += src.count()
                continue
            lo = max(start - base, 0)
            hi = None if stop is None else stop - base
            path = src.info.path
            for rows in src.iter_rows(lo, hi, batch_rows):
                buf.extend(Record(base + i, path, line, data, error) for i, line, data, error in rows)
                while len(buf) >= batch_rows:
                    yield buf[:batch_rows]
                    del buf[:batch_rows]
            known = src.known_count()
            if hi is not None and (known is None or hi <= known):
                break  # stop falls inside this source
            base += src.count()
        if buf:
            yield buf


def open_dataset(paths: Sequence[str] | str, *, split: str | None = None, fmt: str | None = None) -> Dataset:
    """Opens several inputs as one dataset.

    paths: files (.jsonl/.ndjson/.json/.parquet/.pq/.csv/.tsv, optionally .gz), glob patterns (expanded
        in sorted order, "**" recursive), folders written by `datasets.save_to_disk`, or HF hub ids read
        from the local cache (offline); one string is one path.
    split: the split of a DatasetDict folder or a hub dataset (needed when it has several).
    fmt: force the format of every path ("jsonl", "json", "parquet", "csv", "tsv", "hf").
    A missing / unreadable / unrecognised input -> DataError naming it.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise DataError("no data given: pass at least one JSONL/Parquet/CSV file or dataset folder")
    expanded: list[str] = []
    for p in paths:
        p = os.fspath(p) if isinstance(p, os.PathLike) else p
        if isinstance(p, str) and glob.has_magic(p) and not os.path.exists(p):
            matches = sorted(glob.glob(p, recursive=True))
            if not matches:
                raise DataError(f"no file matches {p}")
            expanded += matches
        else:
            expanded.append(p)
    return Dataset([_open_one(p, split, fmt) for p in expanded])
