"""Generators behind one small interface: `Generator.generate(requests) -> generations`.

- `OpenAIGenerator`: any OpenAI-compatible chat-completions server (vLLM, SGLang, TGI, the OpenAI API) over
  httpx: bounded concurrency, retries with exponential backoff and full jitter on 429/5xx/timeouts/connection
  errors/malformed bodies, a per-request timeout, one clear error for 4xx.
- `LocalGenerator`: batched transformers generation with the chat template applied, each request's sampling
  driven by its own seeded RNG, so its output does not depend on the batch it ran in.
- `CallableGenerator`: a Python function as a generator (scripted generators for tests and benchmarks).

Every generator takes `cache=` (a `RequestCache` or a path): a finished request is stored as soon as it
finishes, and a request found in the cache is never sent again, so a killed run resumes where it stopped
and two runs can share one cache file.

The sync `generate` runs an asyncio loop inside; `agenerate` is the same for callers already in one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .cache import RequestCache

__all__ = ["GenerationRequest", "Generation", "Generator", "GeneratorError", "OpenAIGenerator",
           "LocalGenerator", "CallableGenerator", "RequestCache", "generator_from_cli", "derive_seed"]

ProgressFn = Callable[[int, int], None]
log = logging.getLogger("prism_kernels.synth")


def _data_error():
    try:
        from prism_kernels.data import DataError
    except ImportError:  # the data layer is not there (yet)
        return ValueError
    return DataError


class GeneratorError(RuntimeError):
    """A generator call failed for good: a server that stayed down or kept failing after the retries, or a
    request the server rejected (4xx). The message is one line naming the URL (or model) and the cause."""


def derive_seed(seed: int | None, sample_index: int) -> int:
    """The RNG seed of one sample: a 31-bit hash of (seed, sample_index), so the samples of one request
    differ and nearby seeds do not share samples (seed None counts as 0)."""
    digest = hashlib.sha256(f"{0 if seed is None else int(seed)}:{int(sample_index)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class GenerationRequest:
    """One chat completion to make.

    messages: [{"role": str, "content": str}, ...] ending (usually) with a user turn.
    temperature: 0 = greedy. top_p: nucleus mass in (0, 1]. max_tokens: the most new tokens.
    seed: base seed (None: the server's own randomness for `OpenAIGenerator`, 0 for `LocalGenerator`).
    sample_index: which of several samples of the same prompt this is (n samples of one prompt are n
    requests with sample_index 0..n-1, see `samples`); the RNG seed used is `derive_seed(seed, sample_index)`.
    stop: strings that end the generation (not included in the text).
    """

    messages: tuple
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    sample_index: int = 0
    stop: tuple[str, ...] | None = None

    def __post_init__(self):
        if isinstance(self.messages, (str, bytes)) or not isinstance(self.messages, Sequence):
            raise _data_error()(f"GenerationRequest.messages must be a list of {{'role', 'content'}} dicts, "
                      f"got {type(self.messages).__name__}")
        msgs = []
        for i, m in enumerate(self.messages):
            if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(
                    m.get("content"), str):
                raise _data_error()(f"GenerationRequest.messages[{i}] must be a dict with string 'role' and 'content', "
                          f"got {m!r:.80}")
            msgs.append({k: m[k] for k in m})
        if not msgs:
            raise _data_error()("GenerationRequest.messages is empty")
        object.__setattr__(self, "messages", tuple(msgs))
        # Canonical numeric types, so 1 and 1.0 give the same cache key.
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))
        object.__setattr__(self, "max_tokens", int(self.max_tokens))
        object.__setattr__(self, "sample_index", int(self.sample_index))
        if self.seed is not None:
            object.__setattr__(self, "seed", int(self.seed))
        if self.stop is not None:
            stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
            object.__setattr__(self, "stop", stop or None)
        if self.temperature < 0:
            raise _data_error()(f"GenerationRequest.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise _data_error()(f"GenerationRequest.top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise _data_error()(f"GenerationRequest.max_tokens must be >= 1, got {self.max_tokens}")
        if self.sample_index < 0:
            raise _data_error()(f"GenerationRequest.sample_index must be >= 0, got {self.sample_index}")

    def samples(self, n: int) -> list["GenerationRequest"]:
        """n requests for n samples of this prompt: sample_index 0..n-1, everything else equal."""
        from dataclasses import replace
        return [replace(self, sample_index=i) for i in range(n)]

    def canonical(self, model_id: str) -> dict:
        """The dict whose canonical JSON is hashed into the cache key."""
        return {"v": 1, "model": model_id, "messages": list(self.messages), "temperature": self.temperature,
                "top_p": self.top_p, "max_tokens": self.max_tokens, "seed": self.seed,
                "sample_index": self.sample_index, "stop": list(self.stop) if self.stop else None}

    def cache_key(self, model_id: str) -> str:
        """sha256 hex of the canonical JSON of (model id, messages, sampling parameters, sample index)."""
        blob = json.dumps(self.canonical(model_id), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Generation:
    """One finished completion.

    text: the assistant's reply. finish_reason: "stop" (end of turn or a stop string), "length" (max_tokens
    reached), or what the server said. cached: it came from the cache (no call was made). prompt_tokens,
    completion_tokens: usage when known. latency_s: the call's wall time (the original call's when cached).
    attempts: HTTP attempts this call took (0 when cached or local).
    """

    text: str
    finish_reason: str | None
    cached: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    attempts: int = 0

    def _cache_value(self) -> dict:
        return {"text": self.text, "finish_reason": self.finish_reason, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "latency_s": self.latency_s}


def _run_sync(coro):
    """Runs a coroutine to completion from sync code, also when the caller is inside a running loop
    (a notebook): then in a worker thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class Generator:
    """The interface: `generate(requests) -> generations`, one `Generation` per request, in order.

    Subclasses implement `_agenerate_missing(requests, on_done)`, which makes the calls for requests not in
    the cache and reports each finished one through `on_done(position, generation)` as soon as it finishes
    (it is cached there). `model_id` names the model in cache keys.
    """

    model_id: str
    cache: RequestCache | None

    def __init__(self, model_id: str, cache: RequestCache | str | os.PathLike | None = None):
        self.model_id = model_id
        self.cache = cache if isinstance(cache, RequestCache) or cache is None else RequestCache(cache)
        # Counts over this generator's life, for the loops' logs: requests asked for, answered from the
        # cache, generated, and (HTTP) retries.
        self.stats = {"requests": 0, "cached": 0, "generated": 0, "retries": 0}

    def generate(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None
                 ) -> list[Generation]:
        """Generations for `requests` ([n] -> [n], same order); cached ones are not requested again.

        progress: optional callback(done, total) after each finished request. Raises `GeneratorError` when a
        call fails for good; the requests finished before that are cached, so calling again resumes.
        """
        return _run_sync(self.agenerate(requests, progress))

    async def agenerate(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None
                        ) -> list[Generation]:
        """The async form of `generate`."""
        requests = list(requests)
        for i, r in enumerate(requests):
            if not isinstance(r, GenerationRequest):
                raise TypeError(f"requests[{i}] is a {type(r).__name__}, expected GenerationRequest")
        keys = [r.cache_key(self.model_id) for r in requests]
        out: list[Generation | None] = [None] * len(requests)
        hits = self.cache.get_many(keys) if self.cache is not None else {}
        # One call per distinct key: identical requests in one batch share their generation.
        positions: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            if key in hits:
                h = hits[key]
                out[i] = Generation(h["text"], h["finish_reason"], True, h["prompt_tokens"],
                                    h["completion_tokens"], h["latency_s"], 0)
            else:
                positions.setdefault(key, []).append(i)
        todo = [p[0] for p in positions.values()]
        done = len(requests) - sum(len(p) for p in positions.values())
        self.stats["requests"] += len(requests)
        self.stats["cached"] += done
        total = len(requests)
        if progress is not None and done:
            progress(done, total)

        def on_done(pos: int, gen: Generation) -> None:
            nonlocal done
            i = todo[pos]
            if self.cache is not None:
                self.cache.put(keys[i], self.model_id, requests[i].canonical(self.model_id), gen._cache_value())
            for j in positions[keys[i]]:
                out[j] = gen
            done += len(positions[keys[i]])
            self.stats["generated"] += 1
            if progress is not None:
                progress(done, total)

        if todo:
            await self._agenerate_missing([requests[i] for i in todo], on_done)
        missing = [i for i, g in enumerate(out) if g is None]
        if missing:  # a subclass bug, not a user mistake
            raise RuntimeError(f"{type(self).__name__} returned no generation for requests {missing[:5]}")
        return out  # type: ignore[return-value]

    async def _agenerate_missing(self, requests: list[GenerationRequest],
                                 on_done: Callable[[int, Generation], None]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Releases what the generator holds (the cache connection, a loaded model)."""
        if self.cache is not None:
            self.cache.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------------------------- OpenAI


class _Retryable(Exception):
    """One failed attempt worth retrying; `retry_after` is the server's Retry-After, if any."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _server_message(response) -> str:
    """The error message from an OpenAI-style error body ({"error": {"message": ...}}), else the body text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if body.get("message"):  # TGI, some proxies
            return str(body["message"])
    text = response.text.strip().replace("\n", " ")
    return text[:300] if text else response.reason_phrase


def _retry_after(response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class OpenAIGenerator(Generator):
    """Chat completions from any OpenAI-compatible server (vLLM, SGLang, TGI, the OpenAI API).

    base_url: the API base, e.g. "http://localhost:8000/v1" (requests go to base_url + "/chat/completions").
    model: the served model name. api_key_env: the environment variable holding the key (sent as a Bearer
    token when set). concurrency: the most requests in flight. timeout: seconds per attempt, whole response.
    max_retries: retries after the first attempt on 429, 5xx, timeouts, connection errors and malformed
    bodies, with exponential backoff and full jitter: sleep ~ U(0, min(backoff_max, backoff_base * 2**i)),
    at least the server's Retry-After. 4xx other than 408/409/429 fail at once. cache: a `RequestCache`
    or a path to one. extra_body: more JSON fields sent with every request (e.g. {"top_k": 20} for vLLM;
    part of the cache key). on_rejected: what a request the server refuses for its content (HTTP 400, 413,
    422, e.g. a prompt over the context length) does: "raise" a `GeneratorError` (default), or "skip": it
    becomes an empty generation with finish_reason "rejected" (cached, so a resumed run does not retry it).
    Other 4xx (401, 403, 404: key, permission, URL or model name wrong) always raise.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 8,
                 timeout: float = 60.0, max_retries: int = 6, backoff_base: float = 0.5,
                 backoff_max: float = 30.0, cache: RequestCache | str | os.PathLike | None = None,
                 extra_body: Mapping[str, Any] | None = None, on_rejected: str = "raise"):
        err = _data_error()
        if on_rejected not in ("raise", "skip"):
            raise err(f"generator on_rejected must be 'raise' or 'skip', got {on_rejected!r}")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise err(f"generator URL must start with http:// or https://, got {base_url!r}")
        if not model:
            raise err(f"a model name is required for the generator at {base_url} (--generator-model)")
        if concurrency < 1:
            raise err(f"generator concurrency must be >= 1, got {concurrency}")
        if timeout <= 0:
            raise err(f"generator timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise err(f"generator max_retries must be >= 0, got {max_retries}")
        extra = dict(extra_body or {})
        # Extra sampling fields change the outputs: they are part of the model id in cache keys.
        super().__init__(model + (json.dumps(extra, sort_keys=True) if extra else ""), cache)
        self.on_rejected = on_rejected
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = int(concurrency)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.extra_body = extra
        self._rng = random.Random()  # jitter only; never affects results

    def __repr__(self) -> str:
        return f"OpenAIGenerator({self.base_url!r}, model={self.model!r})"

    def _body(self, r: GenerationRequest) -> dict:
        body = {"model": self.model, "messages": list(r.messages), "temperature": r.temperature,
                "top_p": r.top_p, "max_tokens": r.max_tokens, "n": 1}
        if r.seed is not None:
            body["seed"] = derive_seed(r.seed, r.sample_index)
        if r.stop:
            body["stop"] = list(r.stop)
        body.update(self.extra_body)
        return body

    async def _attempt(self, client, body: dict) -> Generation:
        import httpx
        t0 = time.perf_counter()
        try:
            # The httpx timeout bounds each phase; wait_for bounds the whole attempt (a server that
            # trickles bytes cannot hold a slot forever).
            response = await asyncio.wait_for(client.post(self.url, json=body), self.timeout)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise _Retryable(f"timed out after {self.timeout:g} s") from None
        except httpx.ConnectError as exc:
            raise _Retryable(f"cannot connect ({exc or type(exc).__name__}; is the server running?)") from None
        except (httpx.TransportError, httpx.DecodingError) as exc:  # refused/reset connections, DNS, protocol
            raise _Retryable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        latency = time.perf_counter() - t0
        status = response.status_code
        if 300 <= status < 400:
            raise GeneratorError(f"generator {self.url} redirects (HTTP {status}) to "
                                 f"{response.headers.get('location', '?')}; give that base URL instead")
        if status == 429 or status in (408, 409) or status >= 500:
            raise _Retryable(f"HTTP {status}: {_server_message(response)}", _retry_after(response))
        if status in (400, 413, 422) and self.on_rejected == "skip":
            log.info("generator %s rejected a request: HTTP %d: %s", self.url, status, _server_message(response))
            return Generation("", "rejected", False, None, None, latency)
        if status >= 400:
            hint = " (is the base URL right? it usually ends in /v1)" if status == 404 else ""
            raise GeneratorError(f"generator {self.url} rejected the request (model {self.model!r}): "
                                 f"HTTP {status}: {_server_message(response)}{hint}")
        try:
            data = response.json()
            choice = data["choices"][0]
            content = choice["message"].get("content")
            if content is not None and not isinstance(content, str):
                raise TypeError("content is not a string")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            snippet = response.text[:80].replace("\n", " ")
            raise _Retryable(f"malformed response body ({type(exc).__name__}: {exc}; body starts {snippet!r})"
                             ) from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return Generation(content or "", choice.get("finish_reason"), False, usage.get("prompt_tokens"),
                          usage.get("completion_tokens"), latency)

    async def _call(self, client, sem: asyncio.Semaphore, r: GenerationRequest) -> Generation:
        body = self._body(r)
        last, retry_after = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self._rng.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))
                await asyncio.sleep(max(delay, min(retry_after or 0.0, self.backoff_max)))
            async with sem:
                try:
                    gen = await self._attempt(client, body)
                except _Retryable as exc:
                    last, retry_after = str(exc), exc.retry_after
                    if attempt < self.max_retries:
                        self.stats["retries"] += 1
                        # The first retry of a generator is a warning (a user waiting sees why); the rest debug.
                        level = logging.WARNING if self.stats["retries"] == 1 else logging.DEBUG
                        log.log(level, "generator %s: %s; retrying (attempt %d of %d)", self.url, last,
                                attempt + 2, self.max_retries + 1)
                    continue
            return Generation(gen.text, gen.finish_reason, False, gen.prompt_tokens, gen.completion_tokens,
                              gen.latency_s, attempt + 1)
        resume = " Finished requests are cached: rerun to resume." if self.cache is not None else ""
        raise GeneratorError(f"generator {self.url} failed {self.max_retries + 1} times (model {self.model!r}); "
                             f"last error: {last}.{resume}")

    async def _agenerate_missing(self, requests, on_done):
        import httpx
        headers = {}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        sem = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        # Pool waits are not counted against the timeout: the semaphore already bounds the work in flight.
        timeout = httpx.Timeout(self.timeout, pool=None)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=timeout) as client:
            async def one(pos: int) -> None:
                on_done(pos, await self._call(client, sem, requests[pos]))

            tasks = [asyncio.create_task(one(pos)) for pos in range(len(requests))]
            try:
                finished, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            except BaseException:  # cancelled from outside
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            failed = [t for t in finished if t.exception() is not None]
            if failed:
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                raise failed[0].exception()


# ---------------------------------------------------------------------------------------------- local


def _fingerprint(path: Path) -> str:
    """A cheap identity of a local model directory: names, sizes and mtimes of its weight/config files, so
    retraining a model in place does not serve the old model's cached generations."""
    h = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file() and (
        p.suffix in (".safetensors", ".bin", ".pt", ".json", ".model") or p.name.endswith(".jinja")))
    for p in files:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


class _RowSampler:
    """A transformers logits processor that picks each row's next token (temperature, then top-p, inverse-CDF
    sampling) with a uniform drawn from that row's own CPU torch.Generator, and leaves only that token finite,
    so greedy search takes it. Each request's tokens thus depend on its own seed only, not on the other rows
    of the batch. The arithmetic is batched on the model's device; only the [batch] uniforms come from the
    CPU generators."""

    def __init__(self, requests: list[GenerationRequest], device):
        import torch
        self.temps = torch.tensor([r.temperature for r in requests], dtype=torch.float32, device=device)
        # top_p >= 1 keeps every token (no sort, and no rounding of the cumulative sum can drop the tail).
        self.top_ps = torch.tensor([r.top_p if r.top_p < 1 else float("inf") for r in requests],
                                   dtype=torch.float32, device=device)
        self.sampled = torch.nonzero(self.temps > 0).squeeze(1)
        self.nucleus = bool((self.top_ps[self.sampled] < float("inf")).any()) if len(self.sampled) else False
        self.gens = []
        for r in requests:
            g = torch.Generator(device="cpu")
            g.manual_seed(derive_seed(r.seed, r.sample_index))
            self.gens.append(g)

    def __call__(self, input_ids, scores):
        import torch
        # One uniform per row and step, greedy rows too: each row's stream advances the same way in any batch.
        u = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in self.gens])
        chosen = scores.argmax(-1)
        rows = self.sampled
        if len(rows):
            probs = torch.softmax(scores[rows].float() / self.temps[rows, None], dim=-1)
            idx = None
            if self.nucleus:
                probs, idx = torch.sort(probs, dim=-1, descending=True, stable=True)
                # Keep the smallest prefix whose mass reaches top_p: token i stays if the mass before it < top_p.
                probs = probs * ((torch.cumsum(probs, -1) - probs) < self.top_ps[rows, None])
            cum = torch.cumsum(probs, -1)
            target = u.to(cum.device, cum.dtype)[rows] * cum[:, -1]
            j = torch.searchsorted(cum, target[:, None], right=True).clamp_max(cum.shape[-1] - 1)
            chosen[rows] = (idx.gather(1, j) if idx is not None else j).squeeze(1)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen[:, None], 0.0)
        return out


class LocalGenerator(Generator):
    """Batched generation with a local transformers causal LM.

    path_or_model: a model directory or hub id (read from the local cache), or a loaded causal LM (then
    `tokenizer` is required). tokenizer: a tokenizer or its path (default: the model's). batch_size: prompts
    per `generate` call (sorted by length to limit padding). device: "cpu", "cuda", "cuda:1", "auto", ... dtype:
    "auto" (the checkpoint's) or a torch dtype name. model_id: the name in cache keys (default "local:" +
    the resolved path + a fingerprint of its weight files). cache: a `RequestCache` or a path.

    The chat template is applied with the generation prompt (no template: the messages' contents joined by
    blank lines, then a newline). Each request samples with its own RNG seeded by
    `derive_seed(seed, sample_index)`, so its output is the same in any batch (up to the float rounding of
    padded batches). The model loads on the first request that is not cached.
    """

    def __init__(self, path_or_model, tokenizer=None, batch_size: int = 8, device: str = "cpu",
                 dtype: str = "auto", model_id: str | None = None,
                 cache: RequestCache | str | os.PathLike | None = None, trust_remote_code: bool = False):
        err = _data_error()
        if batch_size < 1:
            raise err(f"generator batch_size must be >= 1, got {batch_size}")
        self._model = None
        self._tokenizer = tokenizer
        if isinstance(path_or_model, (str, os.PathLike)):
            path = Path(path_or_model).expanduser()
            if path.exists():
                if not (path / "config.json").is_file():
                    raise err(f"local generator {path}: no config.json there (expected a transformers model "
                              "directory saved with save_pretrained)")
                self.path = str(path.resolve())
                default_id = f"local:{self.path}@{_fingerprint(path)}"
            elif str(path_or_model).startswith(("/", ".", "~")) or str(path_or_model).count("/") != 1:
                raise err(f"local generator model {str(path_or_model)!r} does not exist")
            else:
                self.path = str(path_or_model)  # "org/name": a hub id, read from the local cache
                default_id = f"local:{self.path}"
        else:
            if tokenizer is None:
                raise err("LocalGenerator: a loaded model needs tokenizer=")
            self._model = path_or_model
            self.path = getattr(getattr(path_or_model, "config", None), "_name_or_path", "") or None
            if model_id is None and not self.path:
                raise err("LocalGenerator: a loaded model without a name needs model_id= (the cache key's name)")
            default_id = f"local:{self.path}"
        super().__init__(model_id or default_id, cache)
        self.batch_size = int(batch_size)
        if device == "auto":
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code

    def __repr__(self) -> str:
        return f"LocalGenerator({self.path!r}, device={self.device!r})"

    def _load(self):
        import torch
        import transformers
        if self._model is None:
            kwargs = {"trust_remote_code": self.trust_remote_code}
            if self.dtype != "auto":
                kwargs["dtype"] = getattr(torch, self.dtype)
            try:
                self._model = transformers.AutoModelForCausalLM.from_pretrained(self.path, **kwargs)
            except (OSError, ValueError) as exc:
                raise _data_error()(f"local generator {self.path}: cannot load a causal LM "
                                    f"({str(exc).splitlines()[0]})") from None
            self._model.to(self.device)
        self._model.eval()
        tok = self._tokenizer
        if tok is None or isinstance(tok, (str, os.PathLike)):
            src = str(tok) if tok is not None else self.path
            try:
                tok = transformers.AutoTokenizer.from_pretrained(src, trust_remote_code=self.trust_remote_code)
            except (OSError, ValueError) as exc:
                raise _data_error()(f"local generator {src}: cannot load its tokenizer "
                                    f"({str(exc).splitlines()[0]})") from None
        tok.padding_side = "left"  # generation appends on the right: pad on the left
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self._tokenizer = tok
        eos = set()
        for src in (tok.eos_token_id, getattr(self._model.generation_config, "eos_token_id", None)):
            if isinstance(src, int):
                eos.add(src)
            elif src:
                eos.update(int(x) for x in src)
        if not eos:
            raise _data_error()(f"local generator {self.path}: the tokenizer and the generation config name no "
                                "end-of-sequence token")
        self._eos = eos
        return self._model, tok

    def _prompt(self, tok, messages) -> str:
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        return "\n\n".join(m["content"] for m in messages) + "\n"

    def _generate_batch(self, requests: list[GenerationRequest]) -> list[Generation]:
        import torch
        import transformers
        model, tok = self._load()
        texts = [self._prompt(tok, r.messages) for r in requests]
        enc = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        max_new = max(r.max_tokens for r in requests)
        config = transformers.GenerationConfig(max_new_tokens=max_new, do_sample=False, num_beams=1,
                                               eos_token_id=sorted(self._eos), pad_token_id=tok.pad_token_id)
        t0 = time.perf_counter()
        sampler = transformers.LogitsProcessorList([_RowSampler(requests, ids.device)])
        with torch.no_grad():
            seqs = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                  logits_processor=sampler)
        latency = (time.perf_counter() - t0) / len(requests)
        out = []
        for b, r in enumerate(requests):
            new = seqs[b, ids.shape[1]:].tolist()[: r.max_tokens]
            finish = "length"
            for j, t in enumerate(new):
                if t in self._eos:
                    new, finish = new[: j + 1], "stop"
                    break
            text = tok.decode([t for t in new if t not in self._eos], skip_special_tokens=True)
            if r.stop:
                cuts = [text.find(s) for s in r.stop if s and s in text]
                if cuts:
                    text, finish = text[: min(cuts)], "stop"
            out.append(Generation(text, finish, False, int(mask[b].sum()), len(new), latency))
        return out

    async def _agenerate_missing(self, requests, on_done):
        # Sorted by prompt length so batches pad little; each batch is cached as soon as it finishes.
        model, tok = self._load()
        lengths = [len(tok(self._prompt(tok, r.messages), add_special_tokens=False)["input_ids"]) for r in requests]
        order = sorted(range(len(requests)), key=lambda i: (lengths[i], i))
        for s in range(0, len(order), self.batch_size):
            chunk = order[s:s + self.batch_size]
            gens = await asyncio.to_thread(self._generate_batch, [requests[i] for i in chunk])
            for i, g in zip(chunk, gens):
                on_done(i, g)

    def close(self) -> None:
        """Drops the loaded model and closes the cache."""
        self._model = None
        super().close()


# ------------------------------------------------------------------------------------------- callable


class CallableGenerator(Generator):
    """A Python function as a generator: fn(request) -> str (or a `Generation`), e.g. a scripted generator
    for tests and benchmarks. model_id names it in cache keys."""

    def __init__(self, fn: Callable[[GenerationRequest], str | Generation], model_id: str,
                 cache: RequestCache | str | os.PathLike | None = None):
        super().__init__(model_id, cache)
        self.fn = fn

    async def _agenerate_missing(self, requests, on_done):
        for pos, r in enumerate(requests):
            t0 = time.perf_counter()
            res = self.fn(r)
            if isinstance(res, str):
                res = Generation(res, "stop", False, None, None, time.perf_counter() - t0)
            elif not isinstance(res, Generation):
                raise TypeError(f"{self.model_id}: the function returned a {type(res).__name__}, "
                                "expected str or Generation")
            on_done(pos, res)


# ------------------------------------------------------------------------------------------------ CLI


def generator_from_cli(generator: str, generator_model: str | None = None,
                       cache_path: str | os.PathLike | None = None, *, concurrency: int = 8,
                       timeout: float = 60.0, max_retries: int = 6, batch_size: int = 8,
                       device: str = "cpu", api_key_env: str = "OPENAI_API_KEY", on_rejected: str = "raise"
                       ) -> Generator:
    """The generator the command line names.

    generator: "http(s)://HOST[:PORT]/v1" (an OpenAI-compatible server; the model from `generator_model`,
    the key from $OPENAI_API_KEY) or "local:PATH" (a local causal LM directory or cached hub id).
    cache_path: the SQLite request cache (None: no cache). The keyword options go to `OpenAIGenerator`
    (concurrency, timeout, max_retries, api_key_env, on_rejected) or `LocalGenerator` (batch_size, device).
    Bad values raise DataError naming the option.
    """
    err = _data_error()
    if not isinstance(generator, str) or not generator.strip():
        raise err("--generator is empty; give a server URL (http://host:8000/v1) or local:PATH")
    generator = generator.strip()
    cache = RequestCache(cache_path) if cache_path is not None else None
    if generator.startswith(("http://", "https://")):
        if not generator_model:
            raise err(f"--generator {generator} needs --generator-model NAME (the model the server serves)")
        return OpenAIGenerator(generator, generator_model, api_key_env=api_key_env, concurrency=concurrency,
                               timeout=timeout, max_retries=max_retries, cache=cache, on_rejected=on_rejected)
    if generator.startswith("local:"):
        path = generator[len("local:"):]
        if not path:
            raise err("--generator local: needs a path, e.g. local:/models/qwen2.5-0.5b-instruct")
        if generator_model:
            raise err("--generator-model is only for a server URL; local:PATH names the model itself")
        return LocalGenerator(path, batch_size=batch_size, device=device, cache=cache)
    raise err(f"--generator {generator!r} is neither a server URL (http://host:8000/v1) nor local:PATH")
