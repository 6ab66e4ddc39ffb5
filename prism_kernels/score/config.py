"""The run configuration: what a run's results depend on (its identity) and how it runs.

``ScoreConfig.identity()`` is stored in ``config.json`` with its hash; re-running into the same run
directory with a different identity is refused, naming the keys that differ. The engine, device
placement and worker counts are not part of the identity (a run may be resumed on another engine).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..gradient_sketch import SKETCHER_KINDS as KINDS  # the sketch kinds, listed once (kernels + kronecker)
from .rundir import config_hash

DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
BAD_RECORD = ("skip", "fail")
ENGINES = ("local", "ray")

#: identity keys, in the order differences are reported
IDENTITY_KEYS = ("data", "split", "limit", "fields", "model", "tokenizer", "k", "kind", "seed", "params",
                 "max_length", "dtype", "batch_tokens", "shard_rows", "on_bad_record")


def _error(msg: str):
    from ..data import DataError

    return DataError(msg)


@dataclass
class ScoreConfig:
    """Options of ``prism score`` (see ``prism score --help``; docs/score.md).

    data: input paths / HF ids, scored as one dataset in this order. fields: a ``--fields`` spec, a
    FieldMap as JSON dict, or None (auto-detected; the detected map is stored). dtype/device "auto" are
    resolved by :func:`resolve_device` before the identity is taken.
    """

    data: list[str]
    model: str = DEFAULT_MODEL
    tokenizer: str | None = None
    k: int = 1024
    kind: str = "rademacher"
    seed: int = 0
    params: str = "all"
    max_length: int = 2048
    batch_tokens: int = 16384
    shard_rows: int = 1024
    limit: int | None = None
    split: str | None = None
    fields: str | dict | None = None
    on_bad_record: str = "skip"
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    engine: str = "local"
    workers: int = 1
    gpus_per_worker: float | None = None
    address: str | None = None
    # filled in by score_dataset: identities of the data and the model files
    data_identity: str | None = None
    model_identity: str | None = None
    extra: dict = field(default_factory=dict)

    def validate(self) -> "ScoreConfig":
        """Checks option values; DataError naming the option."""
        def positive(name, value, minimum=1):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise _error(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value!r}")

        if not self.data:
            raise _error("no DATA given: pass one or more files (JSONL, Parquet, CSV) or a datasets folder")
        positive("k", self.k)
        positive("max_length", self.max_length, 2)
        positive("batch_tokens", self.batch_tokens)
        positive("shard_rows", self.shard_rows)
        positive("workers", self.workers)
        if self.limit is not None:
            positive("limit", self.limit)
        for name, value, allowed in (("kind", self.kind, KINDS), ("device", self.device, DEVICES),
                                     ("dtype", self.dtype, DTYPES), ("on_bad_record", self.on_bad_record, BAD_RECORD),
                                     ("engine", self.engine, ENGINES)):
            if value not in allowed:
                raise _error(f"--{name.replace('_', '-')} must be one of {', '.join(allowed)}, got {value!r}")
        if self.params not in ("all", "linear"):
            import re

            try:
                re.compile(self.params)
            except re.error as exc:
                raise _error(f"--params {self.params!r} is not 'all', 'linear' or a valid regular expression: "
                             f"{exc}") from None
        return self

    def identity(self) -> dict:
        """The keys the results depend on (JSON-able), after ``resolve_device``."""
        return {
            "data": {"paths": list(self.data), "identity": self.data_identity},
            "split": self.split, "limit": self.limit, "fields": self.fields,
            "model": {"name": self.model, "identity": self.model_identity},
            "tokenizer": self.tokenizer, "k": self.k, "kind": self.kind, "seed": self.seed, "params": self.params,
            "max_length": self.max_length, "dtype": self.dtype, "batch_tokens": self.batch_tokens,
            "shard_rows": self.shard_rows, "on_bad_record": self.on_bad_record,
        }

    def hash(self) -> str:
        return config_hash(self.identity())

    def to_json(self) -> dict:
        """config.json: format, identity, its hash, and how the run was started (informative)."""
        return {"format": "prism_kernels.score.config/1", "config_hash": self.hash(), "identity": self.identity(),
                "runtime": {"device": self.device, "engine": self.engine, "workers": self.workers,
                            "gpus_per_worker": self.gpus_per_worker, "address": self.address,
                            "trust_remote_code": self.trust_remote_code}}

    @classmethod
    def from_json(cls, d: dict) -> "ScoreConfig":
        """Rebuilds the config stored in config.json (e.g. in a Ray actor)."""
        ident, rt = d["identity"], d.get("runtime", {})
        data = ident["data"]
        cfg = cls(data=list(data["paths"]), model=ident["model"]["name"], tokenizer=ident["tokenizer"],
                  k=ident["k"], kind=ident["kind"], seed=ident["seed"], params=ident["params"],
                  max_length=ident["max_length"], batch_tokens=ident["batch_tokens"],
                  shard_rows=ident["shard_rows"], limit=ident["limit"], split=ident["split"], fields=ident["fields"],
                  on_bad_record=ident["on_bad_record"], dtype=ident["dtype"], device=rt.get("device", "auto"),
                  trust_remote_code=rt.get("trust_remote_code", False), engine=rt.get("engine", "local"),
                  workers=rt.get("workers", 1), gpus_per_worker=rt.get("gpus_per_worker"),
                  address=rt.get("address"), data_identity=data["identity"],
                  model_identity=ident["model"]["identity"])
        return cfg

    def replace(self, **changes) -> "ScoreConfig":
        return dataclasses.replace(self, **changes)


def diff_identity(stored: dict, current: dict) -> list[str]:
    """Human-readable differences between two identities, e.g. ``["k: 512 -> 1024"]``."""
    out = []
    for key in IDENTITY_KEYS:
        a, b = stored.get(key), current.get(key)
        if a == b:
            continue
        if key == "data" and isinstance(a, dict) and isinstance(b, dict) and a.get("paths") == b.get("paths"):
            out.append("data: the input files changed (size or modification time)")
        elif key == "model" and isinstance(a, dict) and isinstance(b, dict) and a.get("name") == b.get("name"):
            out.append(f"model: the files of {b.get('name')} changed")
        else:
            out.append(f"{key}: {_short(a)} -> {_short(b)}")
    return out


def _short(v) -> str:
    if isinstance(v, dict) and "paths" in v:
        v = v["paths"]
    if isinstance(v, dict) and "name" in v:
        v = v["name"]
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def resolve_device(device: str, dtype: str, *, gpus_per_worker: float | None = None,
                   local: bool = True) -> tuple[str, str]:
    """("auto"|"cpu"|"cuda", "auto"|dtype) -> concrete (device, dtype): auto device = cuda when available
    (for remote workers, ``local=False``: cuda when ``gpus_per_worker`` > 0, else this machine's answer);
    auto dtype = bfloat16 on cuda, float32 on cpu. ``--device cuda`` without CUDA here is an error only
    when the work runs here (``local``)."""
    import torch

    if device == "auto":
        remote_gpu = not local and gpus_per_worker is not None and gpus_per_worker > 0
        device = "cuda" if remote_gpu or torch.cuda.is_available() else "cpu"
    elif device == "cuda" and local and not torch.cuda.is_available():
        raise _error("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    return device, dtype


def path_identity(path: str | os.PathLike) -> str:
    """Cheap identity of a file or folder (names, sizes, mtimes of its top-level files)."""
    import hashlib

    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for child in sorted(p.iterdir()):
            if child.is_file():
                st = child.stat()
                h.update(f"{child.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    elif p.exists():
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]
