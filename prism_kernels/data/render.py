"""Rendering samples to token ids with an exact response mask.

With a chat template (the tokenizer's, as the proxy was trained):
    prefix = template(messages, add_generation_prompt=True)
    full   = template(messages + [{"role": "assistant", "content": response}])
    rest   = full[len(prefix):]           # the assistant content and its end-of-turn marker (and whatever
                                          # the template writes after it, e.g. Qwen's "\n")
Without one: prefix = [BOS if the tokenizer adds one] + prompt + "\n", rest = response + EOS (when the
tokenizer has an EOS token). The prefix text and the rest are tokenized separately and concatenated, so
`response_start = len(prefix ids)` is exact (no BPE merge across the boundary).

Over-long samples (more than max_length tokens): the prompt is cut from the LEFT first, keeping the whole
response and at least the last prompt token (so the first response token is still predicted); when the
response alone does not fit, its tail is cut too. `truncated` is then True.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass
from typing import Sequence

from .errors import DataError
from .fields import Sample


@dataclass(frozen=True)
class Rendered:
    """One rendered sample.

    input_ids: [n_tokens] the prompt then the response, at most max_length tokens ([] when skipped).
    response_start: the loss covers the predictions of input_ids[response_start:].
    n_tokens: len(input_ids).
    n_response_tokens: n_tokens - response_start.
    truncated: the prompt (then, if still too long, the response's tail) was cut.
    skipped_reason: None, or why the sample carries no loss: "empty_response" (no response text),
        "template_error" (the chat template refused the conversation, e.g. roles that do not alternate).
    """

    input_ids: list
    response_start: int
    n_tokens: int
    n_response_tokens: int
    truncated: bool
    skipped_reason: str | None = None


def _skipped(reason: str) -> Rendered:
    return Rendered(input_ids=[], response_start=0, n_tokens=0, n_response_tokens=0, truncated=False,
                    skipped_reason=reason)


class Renderer:
    """Renders `Sample`s for one tokenizer (see the module docstring for the rules).

    tokenizer: a transformers tokenizer (a fast one tokenizes whole batches in Rust in `render_many`).
    max_length: the most tokens of a rendered sample (>= 2).
    chat_template: None (default) uses the tokenizer's chat template when it has one; False forces the
        plain prompt + "\\n" + response rendering; True requires a template (DataError when it has none).
    """

    def __init__(self, tokenizer, max_length: int = 2048, *, chat_template: bool | None = None):
        try:
            limit = operator.index(max_length)  # ints and numpy integers; not floats or text
        except TypeError:
            limit = None
        if limit is None or isinstance(max_length, bool) or limit < 2:
            raise DataError(f"max_length must be an integer >= 2, got {max_length!r}")
        max_length = limit
        has_template = getattr(tokenizer, "chat_template", None) is not None
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        if chat_template and not has_template:
            raise DataError(f"the tokenizer {name} has no chat template")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.use_chat_template = has_template if chat_template is None else bool(chat_template)
        self.name = name
        self.eos_ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        self.bos_ids = self._leading_special_ids() if not self.use_chat_template else []
        self._warned = False
        self._backend = self._fast_backend()

    def _fast_backend(self):
        """The Rust tokenizer of a fast tokenizer, used directly: its batch call without the Python
        wrapper's per-encoding conversion is several times cheaper per sample. Only when it gives the same
        ids as the wrapper (checked on a probe text with the template's special tokens); else None."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None or not getattr(self.tokenizer, "is_fast", False):
            return None
        if bool(getattr(self.tokenizer, "split_special_tokens", False)) != bool(
                getattr(backend, "encode_special_tokens", False)):
            return None
        probe = ["Question: 12 + 7 = ?\n  Answer:\t19 \u00e9\u4e2d " + " ".join(self.tokenizer.all_special_tokens), ""]
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        try:
            ours = [e.ids for e in encode(probe, add_special_tokens=False)]
        except Exception:
            return None
        theirs = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        return encode if ours == [list(t) for t in theirs] else None

    def _encode(self, texts: list[str]) -> list[list[int]]:
        """[n] texts -> [n] token id lists, no special tokens added (one batched call)."""
        if self._backend is not None:
            return [e.ids for e in self._backend(texts, add_special_tokens=False)]
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def _leading_special_ids(self) -> list[int]:
        # What the tokenizer prepends with add_special_tokens=True (a BOS for Llama-style tokenizers,
        # nothing for Qwen's): found by comparing one text tokenized both ways.
        plain = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        special = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        for i in range(len(special) - len(plain) + 1):
            if special[i:i + len(plain)] == plain:
                return list(special[:i])
        return []

    def _texts(self, samples: Sequence[Sample]) -> list[tuple[str, str] | str]:
        """(prefix text, rest text) of each sample, or the reason it is skipped."""
        out: list[tuple[str, str] | str] = ["empty_response"] * len(samples)
        todo = [i for i, s in enumerate(samples) if s.response.strip()]
        if not self.use_chat_template:
            for i in todo:
                out[i] = (samples[i].prompt_text + "\n", samples[i].response)
            return out
        convs = [list(samples[i].messages) for i in todo]
        fulls = [c + [{"role": "assistant", "content": samples[i].response}] for c, i in zip(convs, todo)]
        try:  # one batched call each (cheaper than one call per sample)
            prefixes = self._apply(convs, True) if convs else []
            texts = self._apply(fulls, False) if fulls else []
        except Exception:  # a template refused one conversation: find it (and render the others) one by one
            prefixes, texts = [], []
            for c, f in zip(convs, fulls):
                try:
                    pair = self._apply([c], True)[0], self._apply([f], False)[0]
                except Exception as e:  # jinja errors raised by the template for this conversation
                    if not self._warned:
                        self._warned = True
                        warnings.warn(f"the chat template of {self.name} refused a sample ({type(e).__name__}: "
                                      f"{e}); such samples are skipped as 'template_error'", stacklevel=4)
                    pair = None, None
                prefixes.append(pair[0])
                texts.append(pair[1])
        for i, prefix, full in zip(todo, prefixes, texts):
            if prefix is None:
                out[i] = "template_error"
                continue
            if not full.startswith(prefix):
                raise DataError(f"the chat template of {self.name} does not render the prompt with "
                                f"add_generation_prompt=True as a prefix of the full conversation, so the "
                                f"response cannot be masked exactly; render without the template "
                                f"(chat_template=False)")
            out[i] = (prefix, full[len(prefix):])
        return out

    def _apply(self, conversations: list[list[dict]], generation_prompt: bool) -> list[str]:
        return self.tokenizer.apply_chat_template(conversations, tokenize=False,
                                                  add_generation_prompt=generation_prompt)

    def _assemble(self, prefix: list[int], rest: list[int]) -> Rendered:
        limit = self.max_length
        truncated = len(prefix) + len(rest) > limit
        if truncated:
            if len(rest) <= limit - 1:
                prefix = prefix[len(prefix) - (limit - len(rest)):]  # keep the last limit - len(rest) >= 1
            else:
                prefix = prefix[-1:]
                rest = rest[:limit - len(prefix)]
        ids = prefix + rest
        return Rendered(input_ids=ids, response_start=len(prefix), n_tokens=len(ids), n_response_tokens=len(rest),
                        truncated=truncated, skipped_reason=None)

    def render(self, sample: Sample) -> Rendered:
        """The Rendered of one sample (same result as `render_many([sample])[0]`)."""
        return self.render_many([sample])[0]

    def render_many(self, samples: Sequence[Sample]) -> list[Rendered]:
        """Renders [n] samples with one batched tokenizer call (prefixes and rests) and, with a chat
        template, two batched template calls. Returns [n] Rendered in order; skipped samples have
        skipped_reason set and empty input_ids."""
        texts = self._texts(samples)
        todo = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        out: list[Rendered | None] = [None] * len(samples)
        for i, t in enumerate(texts):
            if isinstance(t, str):
                out[i] = _skipped(t)
        if todo:
            ids = self._encode([texts[i][0] for i in todo] + [texts[i][1] for i in todo])  # prefixes, then rests
            eos = [] if self.use_chat_template else self.eos_ids
            for i, p, r in zip(todo, ids[:len(todo)], ids[len(todo):]):
                out[i] = self._assemble(self.bos_ids + p, r + eos)
        return out  # type: ignore[return-value]
