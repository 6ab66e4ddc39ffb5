"""`prism synth embedsdg` end to end (through add_embedsdg_arguments / run_embedsdg): GSM8K rows from
the shared data, a tiny Qwen2 student loaded with from_pretrained, and the teacher behind the real
loopback OpenAI-compatible server (tests/openai_server.py) reached by the real HTTP client. The
server's replies are scripted from the seeds it is shown (so they parse), some are refusals (so they
do not). Checks the outputs and their provenance, the baseline, kill -9 and resume (same result as an
uninterrupted run, finished requests not sent again), refusal of a run directory with other settings."""

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openai_server import OpenAIServer  # noqa: E402
from tiny_models import GSM8K_TRAIN, tiny_causal_lm, tiny_tokenizer  # noqa: E402

pytest.importorskip("transformers")
pytest.importorskip("httpx")

from prism_kernels.data import DataError  # noqa: E402
from prism_kernels.synth.embedsdg import add_embedsdg_arguments, run_embedsdg  # noqa: E402
from prism_kernels.synth.format import parse_examples  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason=f"GSM8K not found at {GSM8K_TRAIN}")
N_ROWS = 60


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embedsdg_run")
    student = tiny_causal_lm(tmp, tiny_tokenizer(tmp, chat_template=True), hidden_size=32, max_positions=2048)
    data = tmp / "gsm8k60.jsonl"
    with open(GSM8K_TRAIN, encoding="utf-8") as f, open(data, "w", encoding="utf-8") as out:
        for _, line in zip(range(N_ROWS), f):
            out.write(line)
    return student, data


def _refuses(content: str) -> bool:
    return int(hashlib.sha256(content.encode()).hexdigest(), 16) % 4 == 0


def responder(body) -> str:
    """A teacher that blends the seeds it is shown (parsed from its own prompt), or refuses (1 in 4,
    decided by a hash of the prompt, so the same prompt always gets the same reply)."""
    content = body["messages"][-1]["content"]
    if _refuses(content):
        return "I am sorry, I cannot write that problem."
    seeds = [e for e in parse_examples(content)[0] if not e.question.startswith("<")]
    a, b = seeds[0], seeds[-1]
    half = len(b.question) // 2
    return (f"Here is a new problem.\n\n### Question\n{a.question[: len(a.question) // 2]} {b.question[half:]}\n\n"
            f"### Answer\n{a.answer}\n\n### <final_answer>\n{b.final_answer}\n")


def _args_list(setup, out, url, *extra):
    student, data = setup
    return ["--data", str(data), "--student", str(student), "--teacher", url, "--teacher-model", "tiny-test",
            "--out", str(out), "--bins", "10", "--quantile", "0.5", "--decode-tokens", "8", "--quiet", *extra]


def _args(setup, out, url, *extra):
    parser = argparse.ArgumentParser()
    add_embedsdg_arguments(parser)
    return parser.parse_args(_args_list(setup, out, url, *extra))


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_embedsdg_end_to_end_against_a_loopback_server(setup, tmp_path):
    out = tmp_path / "run"
    with OpenAIServer(responder=responder) as server:
        summary = run_embedsdg(_args(setup, out, server.url, "--n", "8"))
        served = list(server.completed_log)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "manifest.json", "map.safetensors", "windows.json", "synthetic.jsonl", "summary.json",
            "density.png", "requests.sqlite"} <= names
    assert (out / "density.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    windows = json.loads((out / "windows.json").read_text())
    assert summary["sparse_windows"] == len(windows["windows"]) > 0
    # Every served prompt is the interpolation prompt with both seeds and the decoded partial.
    assert len(served) == 8 and all("Example A:" in s and "Example B:" in s and "Draft:" in s for s in served)
    refused = sum(_refuses(s) for s in served)
    assert summary["done"] == 8 and summary["unparsable"] == refused and summary["parsed"] == 8 - refused
    rows = _lines(out / "synthetic.jsonl")
    assert len(rows) == 8 - refused
    by_corner = {tuple(w["corner"]): w for w in windows["windows"]}
    for row in rows:
        assert row["method"] == "embedsdg" and row["question"] and row["final_answer"]
        window = by_corner[tuple(row["window"]["corner"])]
        # The seeds are the window's seed pair, members of it, on its two faces.
        assert [s["row_id"] for s in row["seeds"]] == window["seed_rows"]
        lo, hi = torch.tensor(window["box_lo"]), torch.tensor(window["box_hi"])
        if window["count"] >= 2:
            for s in row["seeds"]:
                assert ((torch.tensor(s["coords"]) >= lo) & (torch.tensor(s["coords"]) <= hi)).all()
            assert row["interpolated_in_window"] is True  # PCA: by linearity
        assert isinstance(row["decoded_partial"], str) and row["decoded_partial"] in next(
            s for s in served if row["seeds"][0]["question"][:40] in s)
        assert row["teacher_output"].startswith("Here is a new problem.")
        assert len(row["coords"]) == 2 and row["generator"] == "tiny-test"
    assert summary["interpolated_in_window_two_member_windows"] == 1.0

    # Running again finds everything done: no request is sent, the outputs are the same.
    before = (out / "synthetic.jsonl").read_text()
    stale = out / "items" / ".item-000000.json.x1y2.tmp"  # what a writer killed mid-write leaves
    stale.write_text("{")
    with OpenAIServer(responder=responder) as server:
        again = run_embedsdg(_args(setup, out, server.url, "--n", "8"))
        assert server.attempts == 0
    assert (out / "synthetic.jsonl").read_text() == before and again == summary
    assert not stale.exists()
    # Other settings in the same directory are refused, naming what differs.
    with pytest.raises(DataError, match=r"other settings \(reduce\)"):
        run_embedsdg(_args(setup, out, "http://127.0.0.1:9/v1", "--n", "8", "--reduce", "svd"))


def test_baseline_uses_single_random_seeds_and_its_own_prompt(setup, tmp_path):
    out = tmp_path / "baseline"
    with OpenAIServer(responder=responder) as server:
        summary = run_embedsdg(_args(setup, out, server.url, "--n", "6", "--baseline", "--seed", "3"))
        served = list(server.completed_log)
    assert summary["method"] == "baseline" and summary["done"] == 6
    assert all("Example:" in s and "similar kind" in s and "Draft:" not in s for s in served)
    items = [json.loads((out / "items" / f"item-{j:06d}.json").read_text()) for j in range(6)]
    expected = torch.randperm(N_ROWS, generator=torch.Generator().manual_seed(3))[:6].tolist()
    assert [i["seeds"][0]["position"] for i in items] == expected  # the seeded random order
    assert all(len(i["seeds"]) == 1 and i["decoded_partial"] is None and i["window"] is None for i in items)


def test_tsne_and_3d_maps_report_the_fraction_in_window(setup, tmp_path, capsys):
    with OpenAIServer(responder=responder) as server:
        tsne = run_embedsdg(_args(setup, tmp_path / "tsne", server.url, "--n", "6", "--reduce", "tsne",
                                  "--perplexity", "10"))
        pca3 = run_embedsdg(_args(setup, tmp_path / "pca3", server.url, "--n", "6", "--dims", "3", "--bins", "5",
                                  "--window", "2"))
    for summary, out in ((tsne, tmp_path / "tsne"), (pca3, tmp_path / "pca3")):
        items = [json.loads(p.read_text()) for p in sorted((out / "items").glob("item-*.json"))]
        flags = [i["interpolated_in_window"] for i in items]
        assert summary["interpolated_in_window"] == sum(flags) / len(flags)
        assert all(len(i["interpolated_coords"]) == summary["dims"] for i in items)
    two = pca3["interpolated_in_window_two_member_windows"]
    assert two in (None, 1.0)  # PCA in 3-D: every two-member window, by linearity
    with capsys.disabled():
        print(f"\n[embedsdg] run: t-SNE interpolated in window {tsne['interpolated_in_window']:.2f} "
              f"(two-member windows {tsne['interpolated_in_window_two_member_windows']}); "
              f"PCA 3-D {pca3['interpolated_in_window']:.2f} (two-member windows {two})")


def test_kill_9_and_resume_gives_the_uninterrupted_result(setup, tmp_path):
    def slow(body):
        time.sleep(0.4)
        return responder(body)

    reference = tmp_path / "reference"
    killed = tmp_path / "killed"
    with OpenAIServer(responder=responder) as server:
        run_embedsdg(_args(setup, reference, server.url, "--n", "6", "--batch", "1"))
    with OpenAIServer(responder=slow) as server:
        argv = _args_list(setup, killed, server.url, "--n", "6", "--batch", "1")
        code = ("import argparse, sys; from prism_kernels.synth.embedsdg import add_embedsdg_arguments, run_embedsdg; "
                "p = argparse.ArgumentParser(); add_embedsdg_arguments(p); run_embedsdg(p.parse_args(sys.argv[1:]))")
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen([sys.executable, "-c", code, *argv], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        items = killed / "items"
        deadline = time.time() + 600  # a loaded 2-core machine takes minutes to start a torch process
        while time.time() < deadline and proc.poll() is None and len(list(items.glob("item-*.json"))) < 2:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        done_before = len(list(items.glob("item-*.json")))
        assert 2 <= done_before < 6, f"{done_before} items when killed"
        part = killed / "embeddings" / "part-00000.safetensors"
        part_mtime = part.stat().st_mtime_ns
        # A request the killed client had in flight still finishes on the server: let it, then count.
        while server.in_flight:
            time.sleep(0.05)
        sent_before = server.completed
        run_embedsdg(_args(setup, killed, server.url, "--n", "6", "--batch", "1"))
        sent_after = server.completed - sent_before
    # Finished items were not requested again (at most the one in flight at the kill is repeated... from
    # the cache: it was stored as soon as it finished), and the embeddings were not recomputed.
    assert sent_after <= 6 - done_before
    assert part.stat().st_mtime_ns == part_mtime
    # The same items; coordinates to rounding (the killed process ran with another thread count).
    got, want = _lines(killed / "synthetic.jsonl"), _lines(reference / "synthetic.jsonl")
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
        floats = ("coords", "interpolated_coords")
        assert {k: v for k, v in g.items() if k not in floats and k != "seeds"} == \
            {k: v for k, v in w.items() if k not in floats and k != "seeds"}
        assert [s["row_id"] for s in g["seeds"]] == [s["row_id"] for s in w["seeds"]]
        for key in floats:
            assert torch.allclose(torch.tensor(g[key]), torch.tensor(w[key]), rtol=1e-9, atol=1e-9)
    assert not list(killed.rglob("*.tmp"))


def test_bad_options_are_one_line_errors(setup, tmp_path):
    with pytest.raises(DataError, match=r"^--window 12 is larger than --bins 10$"):
        run_embedsdg(_args(setup, tmp_path / "a", "http://127.0.0.1:9/v1", "--n", "2", "--window", "12"))
    with pytest.raises(DataError, match=r"no sparse windows .* raise --quantile or --threshold"):
        run_embedsdg(_args(setup, tmp_path / "b", "http://127.0.0.1:9/v1", "--n", "2", "--threshold", "1"))
    # One process per run directory: a held lock (another process's, as far as flock is concerned:
    # another open file) refuses the run before anything is read or written.
    fcntl = pytest.importorskip("fcntl")
    busy = tmp_path / "busy"
    busy.mkdir()
    with open(busy / ".lock", "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DataError, match=r"in use by another prism synth embedsdg process"):
            run_embedsdg(_args(setup, busy, "http://127.0.0.1:9/v1", "--n", "2"))
    assert sorted(p.name for p in busy.iterdir()) == [".lock"]


def test_in_memory_examples_and_changed_data_is_refused(setup, tmp_path):
    from prism_kernels.synth.embedsdg import ListSource

    records = [json.loads(line) for line in Path(setup[1]).read_text().splitlines()]
    out = tmp_path / "mem"
    with OpenAIServer(responder=responder) as server:
        summary = run_embedsdg(_args(setup, out, server.url, "--n", "2"), source=ListSource(records[:40]))
    assert summary["examples"] == 40 and summary["done"] == 2
    with pytest.raises(DataError, match=r"other settings \(data_identity\)"):
        run_embedsdg(_args(setup, out, "http://127.0.0.1:9/v1", "--n", "2"), source=ListSource(records[:41]))


def test_a_teacher_that_stays_down_is_a_clear_error_and_the_run_resumes(setup, tmp_path):
    from prism_kernels.synth.generators import GeneratorError

    out = tmp_path / "down"
    with OpenAIServer(responder=responder) as server:
        run_embedsdg(_args(setup, out, server.url, "--n", "2", "--batch", "2"))
    with OpenAIServer(responder=responder) as server:
        server.inject("500", times=None)
        with pytest.raises(GeneratorError, match=server.url.split("/v1")[0]):
            run_embedsdg(_args(setup, out, server.url, "--n", "4", "--batch", "2", "--max-retries", "1"))
    assert sorted(p.name for p in (out / "items").iterdir()) == ["item-000000.json", "item-000001.json"]
    with OpenAIServer(responder=responder) as server:
        summary = run_embedsdg(_args(setup, out, server.url, "--n", "4", "--batch", "2"))
        assert server.completed == 2  # only the two new items were requested
    assert summary["done"] == 4


def test_local_teacher_garbage_is_counted_unparsable(setup, tmp_path):
    """The tiny random LM as its own teacher (`--teacher local:PATH`) writes no parsable example: every
    item is kept in items/ with its raw output and counted as unparsable; synthetic.jsonl is empty."""
    student, _ = setup
    out = tmp_path / "local"
    parser = argparse.ArgumentParser()
    add_embedsdg_arguments(parser)
    argv = [a for a in _args_list(setup, out, f"local:{student}", "--n", "2", "--max-tokens", "12")
            if a not in ("--teacher-model", "tiny-test")]
    summary = run_embedsdg(parser.parse_args(argv))
    assert summary["done"] == 2 and summary["parsed"] == 0 and summary["unparsable"] == 2
    assert (out / "synthetic.jsonl").read_text() == ""
    items = [json.loads(p.read_text()) for p in sorted((out / "items").glob("*.json"))]
    assert all(i["teacher_output"] is not None and not i["parsed"] and i["generator"].startswith("local:")
               for i in items)
