"""The run directory: atomic files, the run config (and its hash), the manifest of finished shards.

Layout (the contract; docs/score.md documents it)::

    RUN_DIR/config.json                    the run's identity (what the results depend on) + its hash
    RUN_DIR/plan.parquet                   the deterministic batch plan, one row group per shard
    RUN_DIR/manifest.json                  finished shards (written after each shard's files)
    RUN_DIR/sketches/shard-NNNNN.safetensors   sketches [n_i, k] f32, row_id [n_i] i64, the shard's Gram
    RUN_DIR/sketches/shard-NNNNN.rows.parquet  the shard's per-row results (every row of its range)
    RUN_DIR/samples.parquet, state.safetensors, summary.json, spectrum.png   (written by the finish step)

Every file is written atomically: a temporary file in the same directory, flush + fsync, ``os.replace``,
then an fsync of the directory, so a ``kill -9`` leaves either the old file or the new one, never half.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

FORMAT = "prism_kernels.score.run/1"


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so a rename inside it survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, writer: Callable[[str], None] | bytes | str) -> Path:
    """Writes ``path`` atomically.

    Args:
        path: the destination file.
        writer: bytes or str (written as is, str as UTF-8), or a callable ``writer(tmp_path)`` that writes
            the whole file at ``tmp_path`` (a file in the same directory; e.g. ``safetensors.save_file``
            or ``pyarrow.parquet.write_table``).

    The temporary file is fsync'ed, renamed over ``path`` (``os.replace``) and the directory fsync'ed.
    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if callable(writer):
            os.close(fd)
            fd = -1
            writer(tmp)
        else:
            data = writer.encode("utf-8") if isinstance(writer, str) else bytes(writer)
            with os.fdopen(fd, "wb") as f:
                fd = -1
                f.write(data)
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def write_json(path: str | os.PathLike, obj) -> Path:
    """Atomically writes ``obj`` as indented JSON (keys in insertion order, NaN refused)."""
    return atomic_write(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def config_hash(identity: dict) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of a run's identity."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class RunDir:
    """Paths and bookkeeping of one run directory (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # paths -------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def plan_path(self) -> Path:
        return self.root / "plan.parquet"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def sketch_dir(self) -> Path:
        return self.root / "sketches"

    def shard_path(self, shard: int) -> Path:
        """``sketches/shard-NNNNN.safetensors``."""
        return self.sketch_dir / f"shard-{shard:05d}.safetensors"

    def shard_rows_path(self, shard: int) -> Path:
        """``sketches/shard-NNNNN.rows.parquet`` (the shard's per-row results)."""
        return self.sketch_dir / f"shard-{shard:05d}.rows.parquet"

    @property
    def samples_path(self) -> Path:
        return self.root / "samples.parquet"

    @property
    def state_path(self) -> Path:
        return self.root / "state.safetensors"

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    @property
    def spectrum_path(self) -> Path:
        return self.root / "spectrum.png"

    # config --------------------------------------------------------------------------------------
    def read_config(self) -> dict | None:
        """The stored config.json, or None when there is none."""
        if not self.config_path.exists():
            return None
        with open(self.config_path, encoding="utf-8") as f:
            return json.load(f)

    def write_config(self, config: dict) -> None:
        write_json(self.config_path, config)

    # manifest ------------------------------------------------------------------------------------
    def read_manifest(self) -> dict:
        """``{"format", "config_hash", "shards": {"<id>": {...ShardResult fields...}}}`` (empty if absent)."""
        if not self.manifest_path.exists():
            return {"format": FORMAT, "shards": {}}
        with open(self.manifest_path, encoding="utf-8") as f:
            return json.load(f)

    def done_shards(self, config_hash_: str | None = None) -> dict[int, dict]:
        """Finished shards whose files are present: ``{shard_id: manifest entry}``."""
        manifest = self.read_manifest()
        if config_hash_ is not None and manifest.get("config_hash") not in (None, config_hash_):
            return {}
        done = {}
        for key, entry in manifest.get("shards", {}).items():
            sid = int(key)
            if self.shard_path(sid).exists() and self.shard_rows_path(sid).exists():
                done[sid] = entry
        return done

    def record_shard(self, entry: dict, config_hash_: str) -> None:
        """Adds one finished shard (a :class:`ShardResult` as a dict, with ``shard``) to the manifest.
        Call it only after the shard's files are on disk (``run_shard`` writes them atomically).
        Not safe for concurrent writers: one process (the driver) records shards."""
        manifest = self.read_manifest()
        manifest["format"] = FORMAT
        manifest["config_hash"] = config_hash_
        manifest.setdefault("shards", {})[str(int(entry["shard"]))] = entry
        manifest["shards"] = dict(sorted(manifest["shards"].items(), key=lambda kv: int(kv[0])))
        write_json(self.manifest_path, manifest)

    def lock(self):
        """Takes an exclusive lock on the run (:func:`lock_directory`); returns the open lock file (keep it open
        while working); DataError when another process holds it."""
        return lock_directory(self.root, "prism score")

    def remove_stale_tmp(self) -> int:
        """Deletes temporary files left by an interrupted atomic write (``.NAME.*.tmp``); returns how many.
        Call it only when no other process writes into this run."""
        n = 0
        for folder in (self.root, self.sketch_dir):
            if folder.is_dir():
                for p in folder.glob(".*.tmp"):
                    p.unlink(missing_ok=True)
                    n += 1
        return n

    def clear(self) -> None:
        """Removes everything a run writes (for ``--overwrite``); other files are left alone."""
        import shutil

        for p in (self.config_path, self.plan_path, self.manifest_path, self.samples_path, self.state_path,
                  self.summary_path, self.spectrum_path):
            if p.exists():
                p.unlink()
        if self.sketch_dir.exists():
            shutil.rmtree(self.sketch_dir)


def lock_directory(root, holder: str):
    """An exclusive lock on the run directory ``root`` (``root/.lock``, flock: released by the OS when the
    process dies, even by kill -9), so that one process at a time works in it. ``holder`` names the kind of
    process in the error (e.g. ``"prism score"``). Returns the open lock file: keep it open while working.
    Raises DataError when another process holds the lock. Not POSIX: no lock."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    f = open(root / ".lock", "a+")
    try:
        import fcntl
    except ImportError:
        return f
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        from ..data import DataError

        raise DataError(f"{root} is in use by another {holder} process; wait for it or use another --out") from None
    return f
