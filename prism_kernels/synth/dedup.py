"""Exact and near-duplicate removal of generated problems (datasketch MinHash + MinHashLSH).

Exact: a SHA-1 of the normalised text (Unicode NFKC, case-folded, runs of whitespace collapsed, leading
and trailing punctuation/space stripped). Near: MinHash signatures (128 permutations, fixed seed) of the
set of word 3-shingles of the normalised text (a text shorter than 3 words is one shingle); an LSH index
tuned for Jaccard 0.7 proposes neighbours, and a text is a near-duplicate when the MinHash estimate of its
Jaccard similarity with one of them is >= 0.7 (LSH's false positives are dropped; its false negatives are
rare at 128 permutations). Why 3-shingles and 0.7 rather than the 5-shingles / 0.8 of web-scale dedup:
math problems are short (GSM8K: ~45 words), and one changed number in a 30-word problem changes five of
~30 5-shingles (Jaccard ~0.7, missed at 0.8) but three 3-shingles (Jaccard ~0.82, caught); two changes
far apart fall below 0.7 and count as a new problem. On GSM8K's 7,473 training questions these settings
flag exactly one pair (two problems identical but for the name, Jaccard 0.97).

Both checks run against an index of the pool and within the batch (the first of two duplicates stays).
datasketch is imported where it is used.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

THRESHOLD = 0.7
NUM_PERM = 128
SHINGLE = 3
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+(?:[.,/]\w+)*|[^\w\s]")


def normalize_text(text: str) -> str:
    """NFKC, case-folded, whitespace runs collapsed to one space, stripped of surrounding punctuation."""
    t = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", t).strip(" \t\n.?!,;:")


def text_key(text: str) -> str:
    """Exact-duplicate key: SHA-1 hex of :func:`normalize_text`."""
    return hashlib.sha1(normalize_text(text).encode("utf-8")).hexdigest()


def shingles(text: str, n: int = SHINGLE) -> set[bytes]:
    """The set of word ``n``-shingles of the normalised text (numbers such as 1,000 or 3.5 stay one word);
    a text of fewer than ``n`` words gives one shingle, an empty text none."""
    words = _WORD.findall(normalize_text(text))
    if len(words) < n:
        return {" ".join(words).encode("utf-8")} if words else set()
    return {" ".join(words[i:i + n]).encode("utf-8") for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class DedupResult:
    """Verdict on one text: ``kind`` is None (new), ``"exact"`` or ``"near"``; ``match`` the key of the item
    it duplicates (a pool key or a batch key) and ``jaccard`` the estimated similarity (1.0 for exact)."""

    kind: str | None
    match: str | None = None
    jaccard: float = 0.0

    @property
    def duplicate(self) -> bool:
        return self.kind is not None


class Deduplicator:
    """An index of texts (the pool) that judges new texts against it and against each other.

    Args:
        threshold: Jaccard similarity of word shingles at and above which two texts are near-duplicates.
        num_perm: MinHash permutations.
        shingle: words per shingle.
        seed: MinHash seed (fixed: the same text always has the same signature).
    """

    def __init__(self, threshold: float = THRESHOLD, num_perm: int = NUM_PERM, shingle: int = SHINGLE,
                 seed: int = 1):
        from datasketch import MinHashLSH

        if not (0 < threshold <= 1):
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        self.threshold, self.num_perm, self.shingle, self.seed = float(threshold), int(num_perm), int(shingle), seed
        self.lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
        self.exact: dict[str, str] = {}     # text_key -> item key
        self.sigs: dict[str, object] = {}   # item key -> MinHash
        self._next = 0

    def __len__(self) -> int:
        return len(self.exact)

    def _minhashes(self, texts: list[str]) -> list:
        from datasketch import MinHash

        sets = [sorted(shingles(t, self.shingle)) for t in texts]
        return MinHash.bulk(sets, num_perm=self.num_perm, seed=self.seed)

    def add(self, texts: list[str], keys: list[str] | None = None) -> None:
        """Adds ``texts`` to the index unconditionally (the pool); ``keys`` name them (default running
        numbers). An exact duplicate within them is indexed once."""
        keys = [f"#{self._next + i}" for i in range(len(texts))] if keys is None else [str(k) for k in keys]
        if len(keys) != len(texts):
            raise ValueError(f"keys: {len(keys)} keys for {len(texts)} texts")
        self._next += len(texts)
        fresh = []
        for t, k in zip(texts, keys):
            h = text_key(t)
            if h not in self.exact:
                self.exact[h] = k
                fresh.append((t, k))
        with self.lsh.insertion_session() as session:
            for (t, k), m in zip(fresh, self._minhashes([t for t, _ in fresh])):
                if k in self.sigs:
                    raise ValueError(f"keys: {k!r} is already in the index")
                self.sigs[k] = m
                session.insert(k, m)

    def check(self, texts: list[str], keys: list[str] | None = None, add: bool = True) -> list[DedupResult]:
        """Judges ``texts`` in order against the index and the earlier texts of this call; with ``add`` the
        new (non-duplicate) ones join the index. Returns one :class:`DedupResult` per text."""
        keys = [f"#{self._next + i}" for i in range(len(texts))] if keys is None else [str(k) for k in keys]
        if len(keys) != len(texts):
            raise ValueError(f"keys: {len(keys)} keys for {len(texts)} texts")
        self._next += len(texts)
        out: list[DedupResult] = []
        batch_exact: dict[str, str] = {}
        batch: list[tuple[str, object]] = []  # new items of this call not yet in the LSH (add=False)
        for t, k, m in zip(texts, keys, self._minhashes(texts)):
            h = text_key(t)
            hit = self.exact.get(h) or batch_exact.get(h)
            if hit is not None:
                out.append(DedupResult("exact", hit, 1.0))
                continue
            best, best_j = None, 0.0
            for other in self.lsh.query(m):
                j = float(m.jaccard(self.sigs[other]))
                if j >= self.threshold and j > best_j:
                    best, best_j = other, j
            for other, om in batch:
                j = float(m.jaccard(om))
                if j >= self.threshold and j > best_j:
                    best, best_j = other, j
            if best is not None:
                out.append(DedupResult("near", best, best_j))
                continue
            out.append(DedupResult(None))
            batch_exact[h] = k
            if add:
                self.exact[h] = k
                self.sigs[k] = m
                self.lsh.insert(k, m)
            else:
                batch.append((k, m))
        return out
