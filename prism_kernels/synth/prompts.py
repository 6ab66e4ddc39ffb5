"""Prompts of the synthesis loops (chat messages). Prismatic Synthesis prompts are named ``prismatic_*``.

Both ask for, and the loops parse, the one format of :mod:`prism_kernels.synth.format`
(``### Question`` / ``### Answer`` / ``### <final_answer>``, examples separated by ``---``).
"""

from __future__ import annotations

from typing import Sequence

from .format import Example, format_examples

PRISMATIC_SYSTEM = ("You write new grade-school math word problems with worked solutions. Every problem must be "
                    "solvable, self-contained and have one numeric final answer.")


def prismatic_generation_messages(seeds: Sequence[Example], n_new: int = 1) -> list[dict]:
    """The few-shot prompt of one Prismatic generation request.

    Args:
        seeds: [s >= 1] pool examples shown as demonstrations.
        n_new: how many new examples to ask for (separated by ``---``).

    Returns: ``[system, user]`` chat messages.
    """
    if n_new < 1:
        raise ValueError(f"n_new must be >= 1, got {n_new}")
    many = "one new problem" if n_new == 1 else f"{n_new} new problems, separated by a line ---"
    user = (f"Here are {len(seeds)} example problems with their solutions:\n\n{format_examples(seeds)}\n\n"
            f"Write {many}. Each must differ from the examples in situation, structure and reasoning, not just "
            "in names or numbers. Use exactly this format for each:\n\n### Question\n<the problem>\n\n"
            "### Answer\n<the step-by-step solution>\n\n### <final_answer>\n<the final answer only, one line>")
    return [{"role": "system", "content": PRISMATIC_SYSTEM}, {"role": "user", "content": user}]


def prismatic_solution_messages(question: str) -> list[dict]:
    """The answer-check prompt: solve ``question`` independently. Returns ``[system, user]`` chat messages
    asking for ``### Answer`` ... ``### <final_answer>`` (parsed by :func:`parse_solution`)."""
    user = (f"Solve this problem.\n\n### Question\n{question.strip()}\n\nReply in exactly this format:\n\n"
            "### Answer\n<the step-by-step solution>\n\n### <final_answer>\n<the final answer only, one line>")
    return [{"role": "system", "content": "You solve math word problems carefully."},
            {"role": "user", "content": user}]


def parse_solution(question: str, text: str) -> str | None:
    """The final answer of a solution written for :func:`prismatic_solution_messages` (None when it has
    none). The question heading is put back in front, so the tolerant example parser reads it; when the reply
    restates the question itself, its last complete example counts."""
    from .format import parse_examples

    examples, _ = parse_examples(f"### Question\n{question.strip()}\n\n{text}")
    return examples[-1].final_answer if examples else None
