"""The Scorer API: sketch_records, datasets.Dataset.map + VendiState reproducing the CLI's G-Vendi, per-sample
results independent of batch composition, bad records kept apart."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

import prism_kernels as pk
from prism_kernels import _backends

pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")

from tiny_models import GSM8K_TRAIN, gsm8k_records, tiny_causal_lm, tiny_tokenizer  # noqa: E402

pytestmark = [pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason=f"GSM8K not found at {GSM8K_TRAIN}"),
              pytest.mark.skipif(_backends.compiled() is None, reason="prism_kernels._C not built")]

from prism_kernels.score import Scorer, score_dataset  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("scorer")
    tok = tiny_tokenizer(root)
    model = tiny_causal_lm(root, tok)
    return {"root": root, "model": str(model), "records": gsm8k_records(16)}


def test_dataset_map_and_vendi_state_give_the_cli_gvendi(env):
    records = env["records"]
    jsonl = env["root"] / "g.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    cli = score_dataset([jsonl], env["root"] / "run", model=env["model"], k=32, shard_rows=8, batch_tokens=1024,
                        progress=False)
    scorer = Scorer(env["model"], k=32)
    ds = datasets.Dataset.from_list(records).map(scorer.map_fn(), batched=True, batch_size=5)
    assert {"sketch", "loss", "n_tokens", "truncated", "finite"} <= set(ds.column_names)
    x = torch.tensor(ds["sketch"], dtype=torch.float32)  # [16, 32]
    assert x.shape == (16, 32) and all(ds["finite"])
    state = pk.VendiState(32, precision="exact").update(x)
    g = cli.summary["gvendi"]
    # other batches (5 per map call vs the CLI's plan), same per-sample results up to fp32 rounding
    assert state.score(1) == pytest.approx(g["q1"], rel=1e-4)
    assert state.score(2) == pytest.approx(g["q2"], rel=1e-4)
    assert state.score("inf") == pytest.approx(g["inf"], rel=1e-4)
    import pyarrow.parquet as pq

    loss = pq.read_table(cli.run_dir / "samples.parquet").column("loss").to_pylist()
    assert ds["loss"] == pytest.approx(loss, rel=1e-4)
    assert scorer.meta == pk.SketchMeta(**cli.summary["sketch_meta"])


def test_results_do_not_depend_on_the_batch(env):
    scorer = Scorer(env["model"], k=32, kind="sparse", seed=3, batch_tokens=100_000)  # all in one batch
    alone = Scorer(env["model"], k=32, kind="sparse", seed=3, batch_tokens=1)  # one sample per batch
    records = env["records"][:6]
    a, b = scorer.sketch_records(records), alone.sketch_records(records)
    assert a.sketches.shape == (6, 32) and a.finite.all()
    assert ((a.sketches - b.sketches).norm(dim=1) <= 1e-4 * b.sketches.norm(dim=1)).all()
    assert torch.allclose(a.loss, b.loss, rtol=1e-5)
    assert a.n_tokens.tolist() == b.n_tokens.tolist()


def test_bad_records_are_kept_apart(env):
    scorer = Scorer(env["model"], k=16, fields="prompt=question,response=answer")
    good = env["records"][:2]
    out = scorer.sketch_records([good[0], {"answer": "no question"}, {"question": "q?", "answer": ""}, good[1]])
    assert out.finite.tolist() == [True, False, False, True]
    assert out.skipped_reason == [None, "invalid_record", "empty_response", None]
    assert torch.isnan(out.sketches[1]).all() and torch.isnan(out.loss[2])
    ref = scorer.sketch_records(good)
    assert torch.allclose(out.sketches[[0, 3]], ref.sketches, rtol=1e-4, atol=1e-6)
