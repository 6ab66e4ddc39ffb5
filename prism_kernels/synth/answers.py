"""The optional answer check of Prismatic Synthesis: N independent solutions per problem, kept only when a
strict majority of them (more than N/2) agree.

The official scripts keep a problem when ``votes >= int(N * 0.5)``; with N = 3 that is one vote, so every
answer passes. Here the rule is ``2 * votes > N`` (2 of 3, 3 of 4, 3 of 5). Answers are compared with
math-verify (``math_verify.parse`` / ``verify``: 72 = 72.0 = $72, 1,000 = 1000, 1/2 = \\frac{1}{2} = 0.5)
; an answer math-verify cannot parse only equals the same normalised string. math_verify is imported
where it is used; its signal-based timeouts are used only on the main thread (it refuses them elsewhere).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

_SPACE = re.compile(r"\s+")


def strict_majority(votes: int, n: int) -> bool:
    """True when ``votes`` is more than half of ``n`` (``2 * votes > n``); False for n = 0."""
    return n > 0 and 2 * votes > n


def _timeout() -> int | None:
    return 5 if threading.current_thread() is threading.main_thread() else None


class _Parsed:
    """An answer parsed once by math-verify (``parsed`` empty when it found no expression)."""

    def __init__(self, text: str):
        from math_verify import parse

        self.text = text
        self.norm = _SPACE.sub(" ", text.strip()).casefold()
        t = _timeout()
        self.parsed = parse(text, parsing_timeout=t) if t else parse(text, parsing_timeout=None)


def _same(a: _Parsed, b: _Parsed) -> bool:
    from math_verify import verify

    if a.norm and a.norm == b.norm:
        return True
    if not a.parsed or not b.parsed:
        return False
    t = _timeout()
    # verify(gold, target) is not always symmetric (e.g. sets vs. intervals): either direction counts.
    return bool(verify(a.parsed, b.parsed, timeout_seconds=t) or verify(b.parsed, a.parsed, timeout_seconds=t))


def answers_equal(a: str, b: str) -> bool:
    """Whether two final answers are the same by math-verify (or as normalised strings)."""
    return _same(_Parsed(a), _Parsed(b))


@dataclass(frozen=True)
class Vote:
    """Outcome of :func:`majority_vote`.

    n: solutions asked for; votes: how many agree (with the reference, or the largest group of equal
    answers without one); agreement: votes / n; answer: the agreed answer (the reference, or the largest
    group's first answer; None when no solution gave an answer); keep: ``2 * votes > n``.
    """

    n: int
    votes: int
    agreement: float
    answer: str | None
    keep: bool

    def to_json(self) -> dict:
        return {"n": self.n, "votes": self.votes, "agreement": round(self.agreement, 6), "answer": self.answer,
                "keep": self.keep}


def majority_vote(answers: list[str | None], reference: str | None = None) -> Vote:
    """Strict-majority vote over the final answers of N solutions (None = a solution without an answer,
    which counts in N but agrees with nothing).

    Args:
        answers: ``[N]`` final answers.
        reference: the problem's own final answer; when given, votes are the solutions equal to it, else the
            size of the largest group of mutually equal answers.
    """
    n = len(answers)
    parsed = [None if a is None or not str(a).strip() else _Parsed(str(a)) for a in answers]
    if reference is not None and str(reference).strip():
        ref = _Parsed(str(reference))
        votes = sum(1 for p in parsed if p is not None and _same(ref, p))
        return Vote(n, votes, votes / n if n else 0.0, str(reference), strict_majority(votes, n))
    groups: list[list[_Parsed]] = []
    for p in parsed:
        if p is None:
            continue
        for g in groups:
            if _same(g[0], p):
                g.append(p)
                break
        else:
            groups.append([p])
    if not groups:
        return Vote(n, 0, 0.0, None, False)
    best = max(groups, key=len)  # the first of equal-sized groups
    votes = len(best)
    return Vote(n, votes, votes / n, best[0].text, strict_majority(votes, n))
