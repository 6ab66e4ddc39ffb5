"""The prism command: help a newcomer can follow, user mistakes as one-line errors with exit status 2 (no
traceback), compare ranking finished runs, bench outside the benchmarks, light imports."""

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from prism_kernels import _backends

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _run(*args):
    return subprocess.run([sys.executable, "-m", "prism_kernels", *args], capture_output=True, text=True, env=ENV,
                          timeout=120)


def test_help_shows_options_and_examples(capsys):
    from prism_kernels.cli import main

    top = _run("--help")  # python -m prism_kernels
    assert top.returncode == 0 and "score" in top.stdout and "compare" in top.stdout
    with pytest.raises(SystemExit) as exc:
        main(["score", "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    for opt in ("--model", "--out", "--k", "--kind", "--seed", "--params", "--max-length", "--batch-tokens",
                "--device", "--dtype", "--shard-rows", "--limit", "--on-bad-record", "--engine", "--workers",
                "--address", "--gpus-per-worker", "--split", "--fields", "--overwrite", "--trust-remote-code",
                "Qwen/Qwen2.5-0.5B-Instruct", "examples:"):
        assert opt in help_text, opt
    with pytest.raises(SystemExit) as exc:
        main(["score", "x.jsonl", "--k", "zero"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--k" in err and "Traceback" not in err


def test_score_and_compare_import_light():
    code = ("import sys, prism_kernels.score, prism_kernels.cli, prism_kernels.plots;"
            "heavy = [m for m in ('transformers', 'pyarrow', 'rich', 'matplotlib', 'datasets', 'ray')"
            " if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


transformers = pytest.importorskip("transformers")
from tiny_models import GSM8K_TRAIN, gsm8k_records, tiny_causal_lm, tiny_tokenizer  # noqa: E402

needs_kernels = pytest.mark.skipif(_backends.compiled() is None, reason="prism_kernels._C not built")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tok = tiny_tokenizer(root)
    model = tiny_causal_lm(root, tok)
    recs = gsm8k_records(12)
    (root / "distinct.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (root / "same.jsonl").write_text("".join(json.dumps(recs[0]) + "\n" for _ in recs))
    return root, str(model)


def _main(capsys, *args):
    from prism_kernels.cli import main

    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("case", ["missing_file", "missing_field", "empty", "no_model", "unreadable", "bad_fields"])
@needs_kernels
def test_user_mistakes_exit_2_with_one_line(env, capsys, case):
    if not GSM8K_TRAIN.exists():
        pytest.skip("GSM8K not found")
    root, model = env
    data, extra = str(root / "distinct.jsonl"), []
    if case == "missing_file":
        data = str(root / "nope.jsonl")
    elif case == "missing_field":
        extra = ["--fields", "prompt=problem,response=answer"]
    elif case == "empty":
        (root / "empty.jsonl").write_text("")
        data = str(root / "empty.jsonl")
    elif case == "no_model":
        model = "someone/not-cached-model"
    elif case == "unreadable":
        (root / "junk.parquet").write_bytes(b"this is not parquet")
        data = str(root / "junk.parquet")
    elif case == "bad_fields":
        extra = ["--fields", "prompt"]
    rc, out, err = _main(capsys, "score", data, "--model", model, "--out", str(root / f"run-{case}"), "--quiet",
                         *extra)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prism: error: ") and "Traceback" not in err, err
    expect = {"missing_file": "nope.jsonl", "missing_field": "problem", "empty": "empty", "no_model": "local path",
              "unreadable": "junk.parquet", "bad_fields": "--fields"}[case]
    assert expect in lines[0]
    if case == "missing_field":
        assert "question" in lines[0] and "answer" in lines[0]  # the fields present are listed


@needs_kernels
@pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason="GSM8K not found")
def test_score_prints_summary_and_compare_ranks(env, capsys):
    root, model = env
    common = ["--model", model, "--k", "32", "--shard-rows", "4", "--batch-tokens", "1024"]
    rc, _, err = _main(capsys, "score", str(root / "same.jsonl"), "--out", str(root / "r-same"), *common)
    assert rc == 0 and "G-Vendi q=1" in err and "12 scored" in err
    rc, _, _ = _main(capsys, "score", str(root / "distinct.jsonl"), "--out", str(root / "r-distinct"), *common)
    assert rc == 0
    same = json.loads((root / "r-same" / "summary.json").read_text())
    assert same["gvendi"]["q1"] == pytest.approx(1.0, abs=1e-6)  # 12 copies of one sample: one direction
    rc, out, _ = _main(capsys, "compare", str(root / "r-same"), str(root / "r-distinct"), "--json")
    ranked = json.loads(out)
    assert rc == 0 and [Path(r["run"]).name for r in ranked] == ["r-distinct", "r-same"]
    rc, _, err = _main(capsys, "compare", str(root / "r-same"), str(root / "nowhere"))
    assert rc == 2 and "nowhere" in err


def test_bench_without_reports_is_a_clear_error(capsys):
    rc, _, err = _main(capsys, "bench", "--only", "no-such-report")
    assert rc == 2 and "source checkout" in err and "Traceback" not in err


@needs_kernels
@pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason="GSM8K not found")
def test_engine_ray_without_the_engine_module_is_a_clear_error(env, capsys):
    import importlib.util

    try:
        present = importlib.util.find_spec("prism_kernels.distributed.ray_engine") is not None
    except ModuleNotFoundError:
        present = False
    if present:
        pytest.skip("the Ray engine is installed (its own tests cover --engine ray)")
    root, model = env
    rc, _, err = _main(capsys, "score", str(root / "distinct.jsonl"), "--model", model, "--out", str(root / "r-ray"),
                       "--k", "16", "--engine", "ray", "--quiet")
    assert rc == 2 and "ray_engine" in err and "--engine local" in err
