"""The one text format both synthesis loops ask generators for and parse.

One example::

    ### Question
    <the problem>

    ### Answer
    <the worked solution>

    ### <final_answer>
    <the final answer, one line>

Several examples in one response are separated by a line ``---``. The heading of the final answer is
literally ``### <final_answer>`` (the EmbedSDG paper's prompt).

:func:`parse_examples` is tolerant of what real LLMs write around that (``**Question:**``, ``## Problem 2``,
``Final Answer: 42`` on one line, a preamble such as "Here are three problems:", closing chatter, a code
fence around everything, missing ``---`` between examples) and strict about what makes an example: a
question, an answer and a final answer, each non-empty and each given once. Blocks that start an example
but do not complete it are counted, not guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

__all__ = ["Example", "format_examples", "parse_examples", "SEPARATOR"]

SEPARATOR = "---"
_FIELDS = ("question", "answer", "final_answer")
_HEADINGS = {"question": "### Question", "answer": "### Answer", "final_answer": "### <final_answer>"}


@dataclass(frozen=True)
class Example:
    """One synthetic sample: a problem, its worked solution and its final answer (plain strings)."""

    question: str
    answer: str
    final_answer: str

    def to_dict(self) -> dict:
        """`{"question", "answer", "final_answer"}`, the keys of the loops' JSONL outputs."""
        return {"question": self.question, "answer": self.answer, "final_answer": self.final_answer}


def _as_example(item, index: int) -> Example:
    if isinstance(item, Example):
        ex = item
    elif isinstance(item, Mapping):
        missing = [f for f in _FIELDS if not isinstance(item.get(f), str)]
        if missing:
            raise ValueError(f"format_examples: example {index} has no string field(s) {missing}; "
                             f"fields present: {sorted(item)}")
        ex = Example(item["question"], item["answer"], item["final_answer"])
    else:
        raise TypeError(f"format_examples: example {index} is a {type(item).__name__}, "
                        "expected an Example or a dict with question/answer/final_answer")
    for f in _FIELDS:
        if not getattr(ex, f).strip():
            raise ValueError(f"format_examples: example {index} has an empty {f}")
    return ex


def format_examples(examples: Iterable[Example | Mapping[str, str]]) -> str:
    """Renders examples (few-shot seeds, or a scripted generator's output) in the loops' format.

    examples: n >= 1 `Example`s or dicts with string fields question/answer/final_answer.
    Returns one string: the examples' ``### Question`` / ``### Answer`` / ``### <final_answer>`` blocks,
    joined by ``\\n\\n---\\n\\n``. `parse_examples(format_examples(xs))` gives `(xs, 0)` back (fields
    stripped of surrounding whitespace; a final answer is one line).
    """
    blocks = []
    for i, item in enumerate(examples):
        ex = _as_example(item, i)
        blocks.append("\n\n".join(f"{_HEADINGS[f]}\n{getattr(ex, f).strip()}" for f in _FIELDS))
    if not blocks:
        raise ValueError("format_examples: no examples given")
    return f"\n\n{SEPARATOR}\n\n".join(blocks)


# A heading line: optional markdown heading marks and/or bold, the field name (with an optional number such
# as "Question 2" or "Problem #3"), an optional colon (inside or outside the bold), then optional content on
# the same line.
_NAME = (r"(?P<name>question|problem|answer|solution|final[ _-]*answer|"
         r"<\s*final[ _-]*answer\s*>|&lt;\s*final[ _-]*answer\s*&gt;)")
_HEADING_RE = re.compile(
    r"^\s*(?P<hashes>#{1,6})?\s*(?P<bold>\*\*|__)?\s*" + _NAME +
    r"\s*(?:#?\s*\d+)?\s*(?P<colon1>:)?\s*(?P=bold)?\s*(?P<colon2>:)?\s*(?P<rest>.*?)\s*$",
    re.IGNORECASE)
# "<final_answer>42</final_answer>": the heading name used as an XML tag around the answer.
_TAGGED_FINAL_RE = re.compile(r"^\s*<\s*final[ _-]*answer\s*>(?P<rest>.*?)<\s*/\s*final[ _-]*answer\s*>\s*$",
                              re.IGNORECASE)
_SEPARATOR_RE = re.compile(r"^\s*(?:-{3,}|\*{3,}|_{3,}|(?:-\s){2,}-)\s*$")
_FENCE_RE = re.compile(r"^\s*```[\w-]*\s*$")
_SYNONYMS = {"problem": "question", "solution": "answer"}


def _heading(line: str, current: str | None) -> tuple[str, str] | None:
    """(field, rest of the line) when `line` is a heading, else None."""
    tagged = _TAGGED_FINAL_RE.match(line)
    if tagged is not None:
        return "final_answer", tagged.group("rest").strip()
    m = _HEADING_RE.match(line)
    if m is None:
        return None
    raw = m.group("name").lower()
    if "final" in raw:
        field = "final_answer"
    else:
        field = _SYNONYMS.get(raw, raw)
    marked = bool(m.group("hashes") or m.group("bold"))
    colon = bool(m.group("colon1") or m.group("colon2"))
    if not marked:
        # A plain "Answer: ..." counts only with its colon, only for the exact names (never "Problem:" /
        # "Solution:", which start ordinary sentences in solutions) and never for the section it is in
        # (a solution line "Answer: 5 apples" inside the answer is content).
        if not colon or raw in _SYNONYMS or field == current:
            return None
    elif not colon and m.group("rest") and field != "final_answer":
        # "### Question about trains" is a title, not the Question heading with content.
        return None
    return field, m.group("rest")


def _clean_final(text: str) -> str:
    """The final answer: its first non-empty line, without markdown emphasis or code marks around it."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            for mark in ("**", "__", "`", "*", "_"):
                if len(line) > 2 * len(mark) and line.startswith(mark) and line.endswith(mark):
                    line = line[len(mark):-len(mark)].strip()
            return line
    return ""


def _finish(block: dict[str, list[str]] | None, bad: bool) -> Example | None:
    if block is None or bad:
        return None
    text = {f: "\n".join(block.get(f, [])).strip() for f in _FIELDS}
    final = _clean_final(text["final_answer"])
    if not text["question"] or not text["answer"] or not final:
        return None
    return Example(text["question"], text["answer"], final)


def parse_examples(text: str) -> tuple[list[Example], int]:
    """Parses a generator's response into examples.

    text: the response; returns `(examples, n_unparsable)`: the complete examples in order, and the number
    of blocks that began an example (a Question heading, or an Answer/final-answer heading outside one, or
    non-heading text between two separators) but did not give a question, an answer and a final answer,
    each non-empty and once. Text before the first heading and after the last example (a preamble,
    closing remarks) is ignored; so is the text after the first line of a final answer.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_examples: text is a {type(text).__name__}, expected str")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    # A code fence around the whole response (```markdown ... ```) is dropped.
    nonempty = [i for i, ln in enumerate(lines) if ln.strip()]
    if nonempty and _FENCE_RE.match(lines[nonempty[0]]):
        lines[nonempty[0]] = ""
        if len(nonempty) > 1 and _FENCE_RE.match(lines[nonempty[-1]]):
            lines[nonempty[-1]] = ""

    examples: list[Example] = []
    n_bad = 0
    block: dict[str, list[str]] | None = None   # field -> lines, for the example being read
    bad = False                                  # the current block repeated a field
    current: str | None = None                   # the field whose lines are being read
    stray: list[str] = []                        # non-heading text outside any block
    seen_block = False                           # a block (good or bad) has been read already
    after_final = False                          # the current block's final answer line was read

    def close() -> None:
        nonlocal block, bad, current, n_bad, seen_block, after_final
        if block is not None:
            ex = _finish(block, bad)
            if ex is None:
                n_bad += 1
            else:
                examples.append(ex)
            seen_block = True
        block, bad, current, after_final = None, False, None, False

    for line in lines:
        if _SEPARATOR_RE.match(line):
            close()
            # Text between two separators with no heading at all is a block the model wrote in some other
            # shape: unparsable (text before the first block or after the last one is chatter).
            if seen_block and any(s.strip() for s in stray):
                n_bad += 1
            stray = []
            continue
        head = _heading(line, current)
        if head is not None:
            field, rest = head
            if field == "question" or block is None:
                close()
                stray = []
                block = {}
            if field in block:
                bad = True
            block[field] = [rest] if rest else []
            current = field
            after_final = False
            continue
        if block is None:
            stray.append(line)
        elif current == "final_answer" and after_final:
            continue  # trailing text after a one-line final answer
        elif current is not None:
            block[current].append(line)
            if current == "final_answer" and line.strip():
                after_final = True
    close()
    return examples, n_bad
