"""Field mapping: which fields of a record hold the prompt and the response.

Three kinds of schema:
- "pair": a prompt field and a response field (question/answer, prompt/completion, prompt/response, ...);
- "instruction": instruction[/input]/output (Alpaca style; the prompt is the instruction, then a blank
  line and the input when there is one);
- "messages": a chat conversation (a list of {"role", "content"} turns, or ShareGPT {"from", "value"});
  the LAST assistant turn is the response and every turn before it is the prompt conversation (system
  turns kept); turns after it are dropped.
Any kind may also name a `system` field whose text becomes a leading system turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from .errors import DataError

# Pair schemas tried in this order (case-insensitive column names): the first pair present wins.
_PAIRS = (("prompt", "completion"), ("prompt", "response"), ("question", "answer"), ("problem", "solution"),
          ("query", "response"), ("question", "response"), ("input", "output"))
_MESSAGES = ("messages", "conversations")
_SYSTEM = ("system", "system_prompt")
# --fields keys; aliases name the same slot as in the common schemas.
_KEY_ALIASES = {"question": "prompt", "completion": "response", "answer": "response", "conversation": "messages"}
_SLOTS = ("prompt", "response", "instruction", "input", "output", "messages", "system")
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
          "bot": "assistant", "system": "system"}


@dataclass(frozen=True)
class Sample:
    """One training example as the proxy sees it.

    messages: [{"role": ..., "content": ...}] the conversation before the response (usually ends with a
        user turn; may start with a system turn).
    response: the assistant answer whose tokens carry the loss ("" when the record has none; the
        Renderer then skips the sample with skipped_reason="empty_response").
    """

    messages: list
    response: str

    @property
    def prompt_text(self) -> str:
        """The prompt as plain text for tokenizers without a chat template: the turns' contents joined
        by newlines (for a one-turn prompt, just the question)."""
        return "\n".join(m["content"] for m in self.messages)


def _text(value: Any) -> str:
    """A field value as text: strings as they are, None as "", numbers with str(), containers as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _present(record: dict) -> str:
    return ", ".join(map(str, record)) if record else "none"


def _need(record: dict, field: str, slot: str) -> Any:
    if field not in record:
        raise DataError(f"missing field {field!r} (the {slot}); fields present: {_present(record)}")
    return record[field]


def _content(value: Any) -> str:
    # Multimodal-style content: a list of parts, of which the text parts are kept.
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        return "".join(_text(p.get("text")) for p in value if p.get("type", "text") == "text")
    return _text(value)


def _turns(value: Any, field: str) -> list[dict]:
    if isinstance(value, str):  # a conversation stored as JSON text (e.g. a CSV cell)
        try:
            value = json.loads(value)
        except ValueError:
            raise DataError(f"field {field!r} is text that is not a JSON list of turns") from None
    if not isinstance(value, (list, tuple)):
        raise DataError(f"field {field!r} must be a list of {{role, content}} turns, got {type(value).__name__}")
    turns = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise DataError(f"field {field!r}: turn {i} must be an object with role and content, "
                            f"got {type(turn).__name__}")
        role = turn.get("role", turn.get("from"))
        if role is None:
            raise DataError(f"field {field!r}: turn {i} has no 'role' (or 'from'); keys: {_present(turn)}")
        content = turn["content"] if "content" in turn else turn.get("value")
        role = str(role)
        turns.append({"role": _ROLES.get(role.lower(), role), "content": _content(content)})
    return turns


@dataclass(frozen=True)
class FieldMap:
    """Which record fields make a Sample (see the module docstring for the kinds).

    kind: "pair" | "instruction" | "messages"; the other attributes are field names (None = unused).
    """

    kind: str
    prompt: str | None = None
    response: str | None = None
    instruction: str | None = None
    input: str | None = None
    output: str | None = None
    messages: str | None = None
    system: str | None = None

    def __post_init__(self):
        need = {"pair": ("prompt", "response"), "instruction": ("instruction", "output"),
                "messages": ("messages",)}
        if self.kind not in need:
            raise DataError(f"field map kind must be 'pair', 'instruction' or 'messages', got {self.kind!r}")
        allowed = set(need[self.kind]) | {"system"} | ({"input"} if self.kind == "instruction" else set())
        for slot in _SLOTS:
            value = getattr(self, slot)
            if slot in need[self.kind] and not value:
                raise DataError(f"field map of kind {self.kind!r} needs {'/'.join(need[self.kind])}; "
                                f"{slot} is not set")
            if value is not None and slot not in allowed:
                raise DataError(f"field map of kind {self.kind!r} cannot use {slot}={value}")
            if value is not None and not isinstance(value, str):
                raise DataError(f"field map {slot} must be a field name (text), got {value!r}")

    def describe(self) -> str:
        """The mapping in --fields syntax, e.g. "prompt=question, response=answer"."""
        return ", ".join(f"{slot}={getattr(self, slot)}" for slot in _SLOTS if getattr(self, slot) is not None)

    def fields(self) -> list[str]:
        """The record fields this map reads, in slot order."""
        return [getattr(self, s) for s in _SLOTS if getattr(self, s) is not None]

    def check_columns(self, columns: Sequence[str]) -> None:
        """Raises DataError when a field this map needs is absent from the dataset's columns (catches a
        wrong --fields before any row is processed; optional fields (input, system) may be absent)."""
        optional = {self.input, self.system}
        missing = [f for f in self.fields() if f not in columns and f not in optional]
        if missing:
            raise DataError(f"field {missing[0]!r} ({self.describe()}) is not in the data; "
                            f"fields present: {', '.join(columns) or 'none'}")

    def extract(self, record: dict) -> Sample:
        """The Sample of one record (a dict). Missing prompt / instruction / messages field -> DataError
        naming it and listing the fields present; a None or missing response -> response "" (the
        Renderer skips it as "empty_response"). Non-text values are converted with str() (numbers) or
        JSON (lists, objects)."""
        if not isinstance(record, dict):
            raise DataError(f"record must be an object, got {type(record).__name__}")
        messages: list[dict]
        if self.kind == "pair":
            messages = [{"role": "user", "content": _text(_need(record, self.prompt, "prompt"))}]
            response = _text(record.get(self.response))
        elif self.kind == "instruction":
            text = _text(_need(record, self.instruction, "instruction"))
            extra = _text(record.get(self.input)) if self.input is not None else ""
            messages = [{"role": "user", "content": f"{text}\n\n{extra}" if extra else text}]
            response = _text(record.get(self.output))
        else:
            turns = _turns(_need(record, self.messages, "messages"), self.messages)
            last = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=None)
            if last is None:
                messages, response = turns, ""
            else:
                messages, response = turns[:last], turns[last]["content"]
        if self.system is not None:
            system = _text(record.get(self.system))
            if system and not (messages and messages[0]["role"] == "system"):
                messages = [{"role": "system", "content": system}] + messages
        return Sample(messages=messages, response=response)

    def extract_record(self, record) -> Sample:
        """`extract(record.data)` for a `Record`; errors are prefixed with "source:line: "."""
        where = f"{record.source}:{record.line}"
        if record.data is None:
            raise DataError(f"{where}: {record.error}")
        try:
            return self.extract(record.data)
        except DataError as e:
            raise DataError(f"{where}: {e}") from None

    def to_json(self) -> dict:
        """The map as a JSON-able dict (kind + the slots in use), stored in the run config."""
        return {"kind": self.kind, **{s: getattr(self, s) for s in _SLOTS if getattr(self, s) is not None}}

    @classmethod
    def from_json(cls, d: dict) -> "FieldMap":
        """Inverse of `to_json`; unknown keys -> DataError."""
        if not isinstance(d, dict) or "kind" not in d:
            raise DataError(f"field map must be an object with a 'kind', got {d!r}")
        unknown = set(d) - set(_SLOTS) - {"kind"}
        if unknown:
            raise DataError(f"field map has unknown keys {sorted(unknown)}; known: kind, {', '.join(_SLOTS)}")
        return cls(**d)


def detect_fields(columns: Sequence[str]) -> FieldMap:
    """The FieldMap of the common schemas, matched case-insensitively on `columns` (the names kept as
    spelled): messages / conversations; instruction[/input]/output (also Dolly's instruction[/context]/
    response); prompt/completion, prompt/response,
    question/answer, problem/solution, query/response, question/response, input/output (first match wins);
    plus a system / system_prompt column when present. No match -> DataError listing the columns."""
    by_lower: dict[str, str] = {}
    for c in columns:
        by_lower.setdefault(str(c).lower(), str(c))
    system = next((by_lower[s] for s in _SYSTEM if s in by_lower), None)
    for m in _MESSAGES:
        if m in by_lower:
            return FieldMap(kind="messages", messages=by_lower[m], system=system)
    output = next((by_lower[c] for c in ("output", "response") if c in by_lower), None)
    if "instruction" in by_lower and output is not None:  # Alpaca (input/output), Dolly (context/response)
        extra = next((by_lower[c] for c in ("input", "context") if c in by_lower), None)
        return FieldMap(kind="instruction", instruction=by_lower["instruction"], input=extra, output=output,
                        system=system)
    for p, r in _PAIRS:
        if p in by_lower and r in by_lower:
            return FieldMap(kind="pair", prompt=by_lower[p], response=by_lower[r], system=system)
    shown = ", ".join(map(str, columns)) or "none"
    raise DataError(f"cannot tell which fields hold the prompt and the response (fields: {shown}); pass "
                    f"--fields, e.g. --fields prompt=FIELD,response=FIELD or --fields messages=FIELD")


def parse_fields(spec: str) -> FieldMap:
    """The CLI's --fields: comma-separated SLOT=FIELD pairs, e.g. "prompt=question,response=solution",
    "instruction=task,input=context,output=answer", "messages=conversation", each optionally with
    "system=FIELD". Slots: prompt, response, instruction, input, output, messages, system (aliases:
    question=prompt, answer/completion=response). The kind follows from the slots. Bad spec -> DataError."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError("--fields is empty; expected e.g. prompt=question,response=answer")
    slots: dict[str, str] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        key, eq, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not eq or not key or not value:
            raise DataError(f"--fields: {part!r} is not SLOT=FIELD (e.g. prompt=question)")
        slot = _KEY_ALIASES.get(key, key)
        if slot not in _SLOTS:
            raise DataError(f"--fields: unknown slot {key!r}; slots: {', '.join(_SLOTS)}")
        if slot in slots:
            raise DataError(f"--fields: {slot} is given twice")
        slots[slot] = value
    if "messages" in slots:
        kind = "messages"
    elif "instruction" in slots or "output" in slots:
        kind = "instruction"
    elif "prompt" in slots or "response" in slots:
        kind = "pair"
    else:
        raise DataError(f"--fields {spec!r} names no prompt/response, instruction/output or messages field")
    try:
        return FieldMap(kind=kind, **slots)
    except DataError as e:
        raise DataError(f"--fields {spec!r}: {e}") from None
