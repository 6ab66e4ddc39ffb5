"""Generators against real components: the real httpx client against an OpenAI-compatible server on loopback
(tests/openai_server.py, backed by a tiny Qwen2 or scripted, with injected 429s/5xx/4xx/delays/malformed
bodies), the SQLite request cache shared by generators and processes (one killed with SIGKILL), and
LocalGenerator on the same tiny model. Attempts, concurrency and cache hits are counted on the server."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from prism_kernels.synth.generators import (CallableGenerator, Generation, GenerationRequest, GeneratorError,
                                            LocalGenerator, OpenAIGenerator, RequestCache, derive_seed,
                                            generator_from_cli)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openai_server import OpenAIServer, build_tiny_lm  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FAST = dict(backoff_base=0.01, backoff_max=0.05)  # retries without real waiting


def req(text: str, **kw) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": text}], **kw)


@pytest.fixture(autouse=True)
def _hard_timeout():
    """No network test may hang the suite: after 90 s dump the stacks and exit (pytest-timeout is not a
    dependency)."""
    import faulthandler
    faulthandler.dump_traceback_later(90, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    import torch
    # One intra-op thread: on a shared, oversubscribed machine OpenMP's spinning threads make each tiny
    # matmul ~50x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = build_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    yield path, model, tok
    torch.set_num_threads(threads)


@pytest.fixture
def server():
    with OpenAIServer() as s:  # echo replies
        yield s


# ------------------------------------------------------------------------------------------ requests


def test_importing_synth_stays_light():
    # Under an empty parent package (no kernels, no torch), importing the synth package and its generator
    # and format modules must not import the HTTP client or transformers.
    code = ("import sys, types; pkg = types.ModuleType('prism_kernels'); pkg.__path__ = [sys.argv[1]]; "
            "sys.modules['prism_kernels'] = pkg; import prism_kernels.synth, prism_kernels.synth.generators; "
            "print(sorted(m for m in ('httpx', 'openai', 'transformers', 'torch', 'sqlite3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(REPO / "prism_kernels")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['sqlite3']"


def test_request_keys_are_canonical():
    a = req("hi", temperature=1, top_p=1, max_tokens=5)
    b = req("hi", temperature=1.0, top_p=1.0, max_tokens=5.0)
    assert a.cache_key("m") == b.cache_key("m")
    keys = {a.cache_key("m"), a.cache_key("other-model"), req("hi", temperature=1, max_tokens=5,
                                                              sample_index=1).cache_key("m"),
            req("hi", temperature=0.5, max_tokens=5).cache_key("m"), req("hi!", max_tokens=5).cache_key("m"),
            req("hi", max_tokens=5, seed=1).cache_key("m")}
    assert len(keys) == 6
    assert [r.sample_index for r in a.samples(3)] == [0, 1, 2]
    assert len({derive_seed(s, i) for s in range(20) for i in range(20)}) == 400  # no seed+index collisions
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        GenerationRequest([{"role": "user"}])
    with pytest.raises(ValueError, match="top_p"):
        req("x", top_p=0)


# ------------------------------------------------------------------------------------- the HTTP client


def test_generations_from_the_model_server_match_local_greedy(tiny_lm):
    path, model, tok = tiny_lm
    requests = [req(f"Tom has {i} apples and buys {i + 2} more. How many?", temperature=0, max_tokens=8)
                for i in range(4)]
    with OpenAIServer(lm=(model, tok)) as s:
        gens = OpenAIGenerator(s.url, s.model_name, timeout=20).generate(requests)
    assert s.completed == 4 and s.attempts == 4
    assert all(isinstance(g, Generation) and g.text and not g.cached and g.attempts == 1 for g in gens)
    assert all(g.prompt_tokens and g.latency_s > 0 for g in gens)
    # The server decodes with plain model.generate one prompt at a time; LocalGenerator batches with left
    # padding and its own per-row sampler: greedy outputs agree.
    local = LocalGenerator(str(path), batch_size=4).generate(requests)
    assert [g.text for g in local] == [g.text for g in gens]


def test_retries_after_429_and_5xx(server):
    server.inject("429", "500", "503")
    gen = OpenAIGenerator(server.url, server.model_name, **FAST)
    [g] = gen.generate([req("retry me")])
    assert g.text == "echo: retry me" and g.attempts == 4
    assert server.attempts == 4 and server.completed == 1
    assert gen.stats == {"requests": 1, "cached": 0, "generated": 1, "retries": 3}


def test_malformed_json_is_retried_then_reported(server):
    server.inject("malformed")
    [g] = OpenAIGenerator(server.url, server.model_name, **FAST).generate([req("m")])
    assert g.text == "echo: m" and server.attempts == 2
    server.inject("malformed", times=None)
    with pytest.raises(GeneratorError, match="malformed response body") as exc:
        OpenAIGenerator(server.url, server.model_name, max_retries=2, **FAST).generate([req("m2")])
    assert server.url in str(exc.value) and server.attempts == 2 + 3


def test_timeouts_are_retried(server):
    server.inject(("delay", 5.0))
    t0 = time.perf_counter()
    [g] = OpenAIGenerator(server.url, server.model_name, timeout=1.0, **FAST).generate([req("slow")])
    assert g.text == "echo: slow" and g.attempts == 2 and server.attempts == 2
    assert time.perf_counter() - t0 < 4.5


def test_4xx_is_a_clear_error_without_retries(server, monkeypatch):
    server.inject(("status", 400, "This model's maximum context length is 32 tokens"))
    with pytest.raises(GeneratorError) as exc:
        OpenAIGenerator(server.url, server.model_name, **FAST).generate([req("too long")])
    msg = str(exc.value)
    assert server.url in msg and "400" in msg and "maximum context length is 32 tokens" in msg
    assert "\n" not in msg and server.attempts == 1
    # A wrong model name: the server's 404 message and a hint about the base URL.
    with pytest.raises(GeneratorError, match="does not exist"):
        OpenAIGenerator(server.url, "no-such-model", **FAST).generate([req("x")])


def test_rejected_requests_can_be_skipped(server, tmp_path):
    server.inject(("status", 400, "prompt too long"), match="long", times=None)
    gen = OpenAIGenerator(server.url, server.model_name, on_rejected="skip", cache=tmp_path / "r.sqlite", **FAST)
    gens = gen.generate([req("short"), req("long prompt"), req("short 2")])
    assert [(g.text, g.finish_reason) for g in gens] == [("echo: short", "stop"), ("", "rejected"),
                                                         ("echo: short 2", "stop")]
    assert server.log.count("long prompt") == 1  # not retried
    gen.generate([req("long prompt")])
    assert server.log.count("long prompt") == 1  # cached: a resumed run does not ask again
    # A configuration error is never skipped.
    with pytest.raises(GeneratorError, match="404"):
        OpenAIGenerator(server.url, "wrong-model", on_rejected="skip", **FAST).generate([req("short")])
    # Other sampling fields are other cache keys.
    assert OpenAIGenerator(server.url, "m", extra_body={"top_k": 5}).model_id != OpenAIGenerator(server.url, "m").model_id


def test_api_key_from_the_environment(monkeypatch):
    with OpenAIServer(api_key="sk-right") as s:
        monkeypatch.setenv("PRISM_TEST_KEY", "sk-wrong")
        with pytest.raises(GeneratorError, match="401.*Incorrect API key"):
            OpenAIGenerator(s.url, s.model_name, api_key_env="PRISM_TEST_KEY", **FAST).generate([req("k")])
        assert s.attempts == 1
        monkeypatch.setenv("PRISM_TEST_KEY", "sk-right")
        [g] = OpenAIGenerator(s.url, s.model_name, api_key_env="PRISM_TEST_KEY").generate([req("k")])
        assert g.text == "echo: k"


def test_server_down_is_an_error_naming_the_url():
    s = OpenAIServer().start()
    url = s.url
    s.stop()  # nothing listens on that port now
    t0 = time.perf_counter()
    with pytest.raises(GeneratorError) as exc:
        OpenAIGenerator(url, "m", max_retries=3, **FAST).generate([req("anyone?")])
    assert url in str(exc.value) and "failed 4 times" in str(exc.value) and "cannot connect" in str(exc.value)
    assert time.perf_counter() - t0 < 5


def test_a_failing_request_stops_the_run_and_the_rerun_resumes(server, tmp_path):
    server.inject("500", match="B", times=None)  # B fails for good, A and C succeed
    cache = tmp_path / "cache.sqlite"
    requests = [req("A"), req("B"), req("C")]
    with pytest.raises(GeneratorError, match="HTTP 500"):
        OpenAIGenerator(server.url, server.model_name, max_retries=2, cache=cache, **FAST).generate(requests)
    assert server.log.count("B") == 3
    server.clear_faults()
    server.reset_counts()
    gens = OpenAIGenerator(server.url, server.model_name, cache=cache).generate(requests)
    assert server.log == ["B"]  # A and C were finished and cached: not asked again
    assert [g.text for g in gens] == ["echo: A", "echo: B", "echo: C"]
    assert [g.cached for g in gens] == [True, False, True]


def test_concurrency_bound_is_respected():
    with OpenAIServer(delay=0.1) as s:
        gens = OpenAIGenerator(s.url, s.model_name, concurrency=3).generate([req(f"p{i}") for i in range(15)])
    assert s.max_in_flight == 3 and s.completed == 15
    assert [g.text for g in gens] == [f"echo: p{i}" for i in range(15)]  # in request order


def test_throughput_with_concurrency_8_and_50ms_server_delay():
    n = 80
    with OpenAIServer(delay=0.05) as s:
        t0 = time.perf_counter()
        OpenAIGenerator(s.url, s.model_name, concurrency=8).generate([req(f"t{i}") for i in range(n)])
        rate = n / (time.perf_counter() - t0)
    print(f"\nthroughput: {rate:.1f} requests/s (bound: 8 / 0.05 s = 160/s)")
    # The client and this server share one process (and its GIL) on a busy machine: the rate stays below
    # the bound, but far above what one request at a time gives (20/s).
    assert 2 <= s.max_in_flight <= 8
    assert rate > 25  # serial would be at most 20/s


def test_progress_callback_and_duplicates(server):
    seen = []
    gens = OpenAIGenerator(server.url, server.model_name).generate([req("d"), req("e"), req("d")],
                                                                   progress=lambda d, t: seen.append((d, t)))
    assert server.attempts == 2  # identical requests in one batch share one call
    assert [g.text for g in gens] == ["echo: d", "echo: e", "echo: d"]
    assert seen[-1] == (3, 3) and len(seen) == 2


# -------------------------------------------------------------------------------------------- the cache


def test_cache_hit_makes_no_request(server, tmp_path):
    cache = tmp_path / "c.sqlite"
    requests = [req(f"q{i}", temperature=0.7, seed=3) for i in range(5)]
    first = OpenAIGenerator(server.url, server.model_name, cache=cache).generate(requests)
    assert server.attempts == 5 and not any(g.cached for g in first)
    gen = OpenAIGenerator(server.url, server.model_name, cache=cache)
    again = gen.generate(requests)
    assert server.attempts == 5 and all(g.cached for g in again) and gen.stats["cached"] == 5
    assert [g.text for g in again] == [g.text for g in first]
    # Another sample of the same prompt, or other sampling parameters, is another request.
    OpenAIGenerator(server.url, server.model_name, cache=cache).generate(
        [req("q0", temperature=0.7, seed=3, sample_index=1), req("q0", temperature=0.8, seed=3)])
    assert server.attempts == 7
    with sqlite3.connect(cache) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 7


def test_two_generators_share_one_cache_file(tmp_path):
    cache = tmp_path / "shared.sqlite"
    with OpenAIServer(delay=0.02) as s:
        a = OpenAIGenerator(s.url, s.model_name, cache=RequestCache(cache))
        b = OpenAIGenerator(s.url, s.model_name, cache=RequestCache(cache))
        a.generate([req(f"s{i}") for i in range(6)])
        s.reset_counts()
        b.generate([req(f"s{i}") for i in range(3, 9)])
        assert sorted(s.log) == ["s6", "s7", "s8"]
        # Both writing at once, on separate connections: no "database is locked", every result stored.
        errors = []

        def run(gen, names):
            try:
                gen.generate([req(n) for n in names])
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)
        threads = [threading.Thread(target=run, args=(a, [f"x{i}" for i in range(0, 30)])),
                   threading.Thread(target=run, args=(b, [f"x{i}" for i in range(15, 45)]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert not errors
    assert len(RequestCache(cache)) == 9 + 45


def test_cache_rejects_a_file_that_is_not_sqlite(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a database, just text " * 100)
    with pytest.raises(ValueError, match="notes.txt"):
        RequestCache(bad)


KILL_SCRIPT = textwrap.dedent("""
    import sys, types
    # The client needs no kernels: an empty parent package skips `import torch` (seconds on a busy machine).
    pkg = types.ModuleType("prism_kernels")
    pkg.__path__ = [sys.argv[3]]
    sys.modules["prism_kernels"] = pkg
    from prism_kernels.synth.generators import GenerationRequest, OpenAIGenerator
    url, cache = sys.argv[1], sys.argv[2]
    requests = [GenerationRequest([{"role": "user", "content": f"k{i}"}]) for i in range(16)]
    OpenAIGenerator(url, "tiny-test", concurrency=2, cache=cache).generate(requests)
""")


def test_kill_9_mid_run_then_rerun_repeats_no_finished_request(tmp_path):
    cache = tmp_path / "kill.sqlite"
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    requests = [req(f"k{i}") for i in range(16)]
    with OpenAIServer(delay=0.15) as s:
        proc = subprocess.Popen([sys.executable, str(script), s.url, str(cache), str(REPO / "prism_kernels")],
                                env=env)
        try:
            deadline = time.monotonic() + 45
            while s.completed < 5 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, "the run finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        finished = RequestCache(cache).keys()
        model = "tiny-test"
        done = {f"k{i}" for i, r in enumerate(requests) if r.cache_key(model) in finished}
        assert 3 <= len(done) < 16
        s.reset_counts()
        gens = OpenAIGenerator(s.url, model, concurrency=4, cache=cache).generate(requests)
    assert set(s.log) == {f"k{i}" for i in range(16)} - done and len(s.log) == 16 - len(done)
    assert [g.text for g in gens] == [f"echo: k{i}" for i in range(16)]


# ------------------------------------------------------------------------------------ local generation


def test_local_generator_is_deterministic_per_seed_and_batch_independent(tiny_lm, tmp_path):
    path = str(tiny_lm[0])
    prompts = ["Tom has 3 apples.", "How many pears does Sara have left after she sells 4 of 9?", "Box?"]
    requests = [req(p, temperature=1.0, max_tokens=10, seed=7, sample_index=i) for p in prompts for i in (0, 1)]
    a = LocalGenerator(path, batch_size=4).generate(requests)
    b = LocalGenerator(path, batch_size=1).generate(requests)
    assert [g.text for g in a] == [g.text for g in b]  # same seeds, other batches: same samples
    assert all(g.completion_tokens <= 10 and g.finish_reason in ("stop", "length") for g in a)
    assert len({g.text for g in a}) >= 5  # sample indexes and prompts give different samples
    other = LocalGenerator(path, batch_size=4).generate([req(prompts[0], max_tokens=10, seed=8)])
    assert other[0].text != a[0].text
    # top_p that keeps one token is greedy.
    greedy = LocalGenerator(path).generate([req(p, temperature=0, max_tokens=10) for p in prompts])
    nucleus = LocalGenerator(path).generate([req(p, top_p=1e-6, max_tokens=10, seed=1) for p in prompts])
    assert [g.text for g in greedy] == [g.text for g in nucleus]
    # The cache key ignores the batch size: a batch-size-1 generator on the batch-4 cache loads no model.
    cache = tmp_path / "local.sqlite"
    LocalGenerator(path, batch_size=4, cache=cache).generate(requests)
    again = LocalGenerator(path, batch_size=1, cache=cache)
    gens = again.generate(requests)
    assert all(g.cached for g in gens) and again._model is None
    assert [g.text for g in gens] == [g.text for g in a]


def test_row_sampler_draws_from_the_tempered_nucleus():
    """The per-row sampler against numpy: 6000 rows (one seed each) over fixed logits; token frequencies
    match softmax(logits / T) restricted to the top-p nucleus and renormalised (within 5 sigma)."""
    import numpy as np
    import torch
    from prism_kernels.synth.generators import _RowSampler

    logits = np.array([2.0, 1.5, 0.3, -1.0, 0.9, -3.0])
    n = 6000
    for temperature, top_p in ((0.7, 1.0), (1.3, 0.8)):
        requests = [req("x", temperature=temperature, top_p=top_p, seed=i) for i in range(n)]
        scores = torch.tensor(logits, dtype=torch.float32).repeat(n, 1)
        out = _RowSampler(requests, "cpu")(None, scores)
        assert torch.isfinite(out).sum(1).eq(1).all()
        counts = np.bincount(out.argmax(1).numpy(), minlength=len(logits))
        p = np.exp(logits / temperature)
        p /= p.sum()
        order = np.argsort(-p)
        keep = np.zeros_like(p, dtype=bool)
        keep[order[: np.searchsorted(np.cumsum(p[order]), top_p) + 1]] = True
        expected = np.where(keep, p, 0) / p[keep].sum()
        assert (counts[~keep] == 0).all()
        sigma = np.sqrt(n * expected * (1 - expected)) + 1e-9
        assert (np.abs(counts - n * expected) <= 5 * sigma).all(), (counts, n * expected)


def test_local_generator_applies_the_chat_template(tiny_lm):
    path, model, tok = tiny_lm
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tom has 3 apples."}]
    [g] = LocalGenerator(str(path)).generate([GenerationRequest(messages, temperature=0, max_tokens=6)])
    expected = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    expected = expected["input_ids"] if isinstance(expected, dict) or hasattr(expected, "keys") else expected
    assert g.prompt_tokens == len(expected)
    assert (g.finish_reason, g.completion_tokens) == ("length", 6) or (
        g.finish_reason == "stop" and g.completion_tokens <= 6)


def test_local_generator_without_a_chat_template(tiny_lm, tmp_path):
    import transformers
    path, model, tok = tiny_lm
    plain = transformers.AutoTokenizer.from_pretrained(path)
    plain.chat_template = None
    gen = LocalGenerator(model, tokenizer=plain, model_id="tiny-plain")
    [g] = gen.generate([GenerationRequest([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                                          temperature=0, max_tokens=4)])
    assert g.prompt_tokens == len(plain("S\n\nU\n", add_special_tokens=False)["input_ids"])
    with pytest.raises(ValueError, match="model_id"):
        LocalGenerator(transformers.AutoModelForCausalLM.from_config(model.config.__class__(
            vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
            num_key_value_heads=1)), tokenizer=plain)


def test_generate_inside_a_running_event_loop(server):
    import asyncio

    async def main():
        gen = OpenAIGenerator(server.url, server.model_name)
        sync = gen.generate([req("in loop")])          # runs its own loop in a worker thread
        native = await gen.agenerate([req("awaited")])
        return sync[0].text, native[0].text
    assert asyncio.run(main()) == ("echo: in loop", "echo: awaited")


def test_callable_generator_caches(tmp_path):
    calls = []
    gen = CallableGenerator(lambda r: calls.append(r) or f"out {r.messages[-1]['content']}", "scripted",
                            cache=tmp_path / "s.sqlite")
    assert [g.text for g in gen.generate([req("a"), req("b")])] == ["out a", "out b"]
    assert [g.cached for g in gen.generate([req("a"), req("b")])] == [True, True] and len(calls) == 2


# ----------------------------------------------------------------------------------------------- CLI


def test_generator_from_cli(tiny_lm, tmp_path):
    g = generator_from_cli("http://127.0.0.1:9/v1", "qwen", tmp_path / "c.sqlite")
    assert isinstance(g, OpenAIGenerator) and g.url == "http://127.0.0.1:9/v1/chat/completions"
    assert isinstance(g.cache, RequestCache)
    local = generator_from_cli(f"local:{tiny_lm[0]}", None, None)
    assert isinstance(local, LocalGenerator) and local.model_id.startswith("local:")
    with pytest.raises(ValueError, match="--generator-model"):
        generator_from_cli("http://127.0.0.1:9/v1", None, None)
    with pytest.raises(ValueError, match="does not exist"):
        generator_from_cli(f"local:{tmp_path}/missing-model", None, None)
    with pytest.raises(ValueError, match="neither a server URL"):
        generator_from_cli("ftp://x", "m", None)
