"""`python -m prism_kernels.demo`: the ladder with the shipped proxy rises strictly (64 problems per
subset), its numbers equal G-Vendi computed straight from pk.GradientSketcher + pk.VendiState, and the
grid part still runs."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

import prism_kernels as pk
from prism_kernels import _backends
from prism_kernels.demo import DEMO_MODEL_DIR, problems

transformers = pytest.importorskip("transformers")
pytest.importorskip("pyarrow")
pytestmark = pytest.mark.skipif(_backends.compiled() is None, reason="prism_kernels._C not built")

ROWS = 64


def direct_gvendi(rows: list[dict]) -> float:
    """Independent of the scoring pipeline: render with the chat template, loss on the tokens after the
    generation prompt, sketches from pk.GradientSketcher (the demo's options), G-Vendi from pk.VendiState."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
    model = transformers.AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR).eval()
    sketcher = pk.GradientSketcher(model, k=1024, kind="rademacher", seed=0)
    state = pk.VendiState(1024)
    for row in rows:  # one sample per call: no padding anywhere
        messages = problems.to_messages(row)
        prefix = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        tail = tokenizer(full[len(prefix):], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([head + tail])
        labels = ids.clone()
        labels[0, :len(head)] = -100
        sketches, finite = sketcher.sketch(ids, labels=labels)
        assert finite.all()
        state.update(sketches)
    return state.score(1)


def test_demo_ladder_rises_strictly(tmp_path, capsys):
    from prism_kernels.demo.__main__ import main

    assert main(["--out", str(tmp_path), "--rows", str(ROWS), "--skip-grid"]) == 0
    out = capsys.readouterr().out
    assert "check: G-Vendi rises strictly with the number of templates" in out and ": OK" in out
    q1 = []
    for c in problems.LADDER:
        run = tmp_path / "runs" / problems.subset_name(c)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["n"] == ROWS and summary["skipped"] == {}
        assert (run / "spectrum.png").stat().st_size > 0
        q1.append(summary["gvendi"]["q1"])
        assert f"{summary['gvendi']['q1']:7.2f}" in out
    assert all(b > a for a, b in zip(q1, q1[1:])), q1
    assert (tmp_path / "ladder.png").stat().st_size > 0
    rows = [json.loads(line) for line in (tmp_path / "data" / "templates-04.jsonl").read_text().splitlines()]
    assert rows == problems.demo_ladder(ROWS, seed=0)[4]
    assert direct_gvendi(rows) == pytest.approx(q1[1], rel=1e-4)


def test_demo_rejects_too_few_rows(tmp_path, capsys):
    from prism_kernels.demo.__main__ import main

    with pytest.raises(SystemExit) as e:
        main(["--out", str(tmp_path), "--rows", "10"])
    assert e.value.code == 2 and "--rows must be at least 64" in capsys.readouterr().err


def test_grid_part_runs(tmp_path, capsys):
    from prism_kernels.demo import grid

    grid.main(["--points", "20000", "--bins", "64", "--out", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    counts = pk.grid_histogram(grid.demo_points(20000), 64,
                               torch.tensor(summary["bounds"], dtype=torch.float64))
    assert summary["points"] == 20000 and summary["occupied_cells"] == int((counts > 0).sum())
    assert (tmp_path / "density.png").stat().st_size > 0
