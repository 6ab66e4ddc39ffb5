"""An on-disk cache of generator calls: SQLite in WAL mode, one row per finished request.

The key is the sha256 of the canonical JSON of (model id, messages, sampling parameters, sample index)
(`GenerationRequest.cache_key`), so a killed run re-issues only the calls that had not finished, and two
runs (two processes) can share one file: WAL lets readers run beside the one writer, and a busy timeout
makes a writer wait for the other's short write transaction instead of failing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable

__all__ = ["RequestCache", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,          -- sha256 hex of the canonical request JSON
    model TEXT NOT NULL,           -- the generator's model id (for inspection)
    request TEXT NOT NULL,         -- the canonical request JSON itself
    text TEXT NOT NULL,
    finish_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_s REAL,
    created REAL NOT NULL
);
"""


def _data_error():
    try:
        from prism_kernels.data import DataError
    except ImportError:  # the data layer is not there (yet): a ValueError still reads as a user mistake
        return ValueError
    return DataError


class RequestCache:
    """Finished generations keyed by request hash, in one SQLite file (WAL mode).

    path: the database file (its directory is created). busy_timeout_s: how long a write waits for another
    process's write lock. Thread-safe (one connection behind a lock); safe for several processes.
    """

    def __init__(self, path: str | os.PathLike, busy_timeout_s: float = 60.0):
        self.path = Path(path)
        self.busy_timeout_s = float(busy_timeout_s)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        # A connection must not cross a fork: reopen in a child process.
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        DataError = _data_error()
        if self.path.exists() and self.path.is_dir():
            raise DataError(f"generator cache {self.path} is a directory, expected an SQLite file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"generator cache {self.path}: cannot create its directory ({exc.strerror})") from None
        try:
            conn = sqlite3.connect(str(self.path), timeout=self.busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            # NORMAL is durable against a killed process in WAL mode (only a power cut can lose the last
            # commits), and cheap: no fsync per row.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)",
                         (str(SCHEMA_VERSION),))
            version = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise DataError(f"generator cache {self.path} is not a usable SQLite database ({exc})") from None
        if str(mode).lower() != "wal":
            raise DataError(f"generator cache {self.path}: cannot switch to WAL mode (got {mode!r}; "
                            "is it on a network file system?)")
        if version != str(SCHEMA_VERSION):
            raise DataError(f"generator cache {self.path} has schema version {version}, this version of "
                            f"prism_kernels reads {SCHEMA_VERSION}; use another --cache file")
        self._conn, self._pid = conn, os.getpid()
        return conn

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        """The cached entries among `keys`: {key: {"text", "finish_reason", "prompt_tokens",
        "completion_tokens", "latency_s"}}; keys not in the cache are absent."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, dict] = {}
        with self._lock:
            conn = self._connect()
            for i in range(0, len(keys), 500):  # SQLite's bound-parameter limit
                chunk = keys[i:i + 500]
                rows = conn.execute(
                    "SELECT key, text, finish_reason, prompt_tokens, completion_tokens, latency_s "
                    f"FROM generations WHERE key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
                for key, text, finish, pt, ct, lat in rows:
                    out[key] = {"text": text, "finish_reason": finish, "prompt_tokens": pt,
                                "completion_tokens": ct, "latency_s": lat}
        return out

    def get(self, key: str) -> dict | None:
        """The cached entry for `key` (see `get_many`), or None."""
        return self.get_many([key]).get(key)

    def put_many(self, entries: Iterable[tuple[str, str, dict, dict]]) -> None:
        """Stores finished generations in one transaction.

        entries: (key, model id, canonical request dict, {"text", "finish_reason", "prompt_tokens",
        "completion_tokens", "latency_s"}). A key already present (another run finished it first) keeps its
        first value, so every reader of the file sees one answer per request.
        """
        now = time.time()
        rows = [(key, model, json.dumps(request, sort_keys=True, ensure_ascii=False), value["text"],
                 value.get("finish_reason"), value.get("prompt_tokens"), value.get("completion_tokens"),
                 value.get("latency_s"), now) for key, model, request, value in entries]
        if not rows:
            return
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR IGNORE INTO generations (key, model, request, text, finish_reason, "
                                 "prompt_tokens, completion_tokens, latency_s, created) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def put(self, key: str, model: str, request: dict, value: dict) -> None:
        """Stores one finished generation (see `put_many`)."""
        self.put_many([(key, model, request, value)])

    def keys(self) -> set[str]:
        """Every key in the cache."""
        with self._lock:
            return {k for (k,) in self._connect().execute("SELECT key FROM generations")}

    def __len__(self) -> int:
        with self._lock:
            return self._connect().execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def close(self) -> None:
        """Closes the connection (reopened on the next use)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> "RequestCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RequestCache({str(self.path)!r})"
