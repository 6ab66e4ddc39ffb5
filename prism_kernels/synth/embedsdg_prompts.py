"""Prompts of the EmbedSDG loop: the student's copy prompt, the teacher's interpolation prompt and the
random-seed baseline's prompt. Kept in one place so runs can be compared and the prompts reviewed.

Examples are shown to the teacher in the one format both synthesis loops parse
(``### Question`` / ``### Answer`` / ``### <final_answer>``, see :mod:`prism_kernels.synth.format`).
"""

from __future__ import annotations

#: The student sees this instruction, then the interpolated embedding sequence, then (with a chat
#: template) the end of the user turn and the assistant header, and writes what it "read".
COPY_PROMPT = "Repeat the following text exactly, word for word:\n"

#: The teacher turns two seeds and the student's decoded blend of them into one new example.
TEACHER_PROMPT = """Below are two example problems with their solutions, and a rough draft that blends them \
(decoded from a mixture of the two; it may be garbled or incomplete).

Example A:
{seed_a}

Example B:
{seed_b}

Draft:
{partial}

Write ONE new problem that combines ideas from Example A and Example B, guided by the draft, with a \
correct step-by-step solution and its final answer. The new problem must be self-contained, solvable \
and different from both examples. Reply in exactly this format and nothing else:

{format_hint}"""

#: The random-seed baseline: one seed, no interpolation.
BASELINE_PROMPT = """Below is an example problem with its solution.

Example:
{seed}

Write ONE new problem of a similar kind, with a correct step-by-step solution and its final answer. \
The new problem must be self-contained, solvable and different from the example. Reply in exactly \
this format and nothing else:

{format_hint}"""


def teacher_messages(seed_a: str, seed_b: str, partial: str, format_hint: str) -> list[dict]:
    """Chat messages asking the teacher for one new example from two rendered seeds and the decoded
    partial text."""
    text = TEACHER_PROMPT.format(seed_a=seed_a.strip(), seed_b=seed_b.strip(),
                                 partial=partial.strip() or "(empty)", format_hint=format_hint.strip())
    return [{"role": "user", "content": text}]


def baseline_messages(seed: str, format_hint: str) -> list[dict]:
    """Chat messages asking the teacher for one example similar to a single rendered seed."""
    return [{"role": "user", "content": BASELINE_PROMPT.format(seed=seed.strip(), format_hint=format_hint.strip())}]
