"""prism score end to end on real files with a tiny Qwen2 (built from a config, saved, loaded through
from_pretrained) and GSM8K rows from the shared data: outputs and their contract, the stored sketches
against GradientSketcher, novelty and the merged state against independent computations, refusal of a
changed config, bad input."""

import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

import prism_kernels as pk
from prism_kernels import _backends

pytest.importorskip("transformers")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")

from tiny_models import GSM8K_TRAIN, gsm8k_records, tiny_causal_lm, tiny_tokenizer  # noqa: E402

pytestmark = [pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason=f"GSM8K not found at {GSM8K_TRAIN}"),
              pytest.mark.skipif(_backends.compiled() is None, reason="prism_kernels._C not built")]

from prism_kernels.data import DataError  # noqa: E402
from prism_kernels.score import score_dataset  # noqa: E402

SAMPLE_COLUMNS = ["row_id", "source", "line", "n_tokens", "n_response_tokens", "truncated", "loss", "sketch_norm",
                  "finite", "skipped_reason", "novelty"]
OPTS = dict(k=32, shard_rows=4, batch_tokens=1024, max_length=160, progress=False)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("score_run")
    tok = tiny_tokenizer(root)
    model = tiny_causal_lm(root, tok)
    records = gsm8k_records(24)
    jsonl = root / "g.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"root": root, "model": str(model), "records": records, "jsonl": jsonl}


@pytest.fixture(scope="module")
def base(env):
    return score_dataset([env["jsonl"]], env["root"] / "run", model=env["model"], **OPTS)


def test_outputs_follow_the_contract(env, base):
    run = base.run_dir
    for name in ("config.json", "plan.parquet", "manifest.json", "samples.parquet", "state.safetensors",
                 "summary.json", "spectrum.png"):
        assert (run / name).exists(), name
    s = json.loads((run / "summary.json").read_text())
    for key in ("n", "skipped", "truncated", "gvendi", "ci95", "config", "sketch_meta", "seconds", "samples_per_s"):
        assert key in s, key
    assert set(s["gvendi"]) == {"q1", "q2", "inf"} and list(s["ci95"]) == ["q1"]
    assert s["n"] == 24 and s["skipped"] == {} and s["shards"] == 6
    assert s["ci95"]["q1"] is None and "needs >= 8 shards" in s["ci95_note"]
    table = pq.read_table(run / "samples.parquet")
    assert table.column_names == SAMPLE_COLUMNS
    assert table.column("row_id").to_pylist() == list(range(24))
    assert table.column("line").to_pylist() == list(range(1, 25))  # JSONL: 1-based line numbers
    assert all(table.column("finite").to_pylist())
    assert len(list((run / "sketches").glob("shard-*.safetensors"))) == 6
    assert (run / "spectrum.png").read_bytes()[:4] == b"\x89PNG"


def test_stored_sketches_equal_gradient_sketcher(env, base):
    """Shard files hold GradientSketcher's sketch of each sample alone (mask from the renderer)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prism_kernels.data import FieldMap, Renderer

    tok = AutoTokenizer.from_pretrained(env["model"])
    model = AutoModelForCausalLM.from_pretrained(env["model"]).eval()
    sk = pk.GradientSketcher(model, k=32, kind="rademacher", seed=0)
    renderer = Renderer(tok, 160)
    fm = FieldMap(kind="pair", prompt="question", response="answer")
    shard = load_file(base.run_dir / "sketches" / "shard-00001.safetensors")
    assert shard["sketches"].shape == (4, 32) and shard["sketches"].dtype == torch.float32
    assert shard["row_id"].tolist() == [4, 5, 6, 7]
    for i, rid in enumerate(shard["row_id"].tolist()):
        r = renderer.render(fm.extract(env["records"][rid]))
        ids = torch.tensor([r.input_ids])
        resp = torch.zeros_like(ids, dtype=torch.bool)
        resp[0, r.response_start:] = True
        expected = sk.sketch(ids, response_mask=resp).sketches[0]
        assert (shard["sketches"][i] - expected).norm() <= 1e-4 * expected.norm()
    # and the loss column is that sample's mean response-token loss
    row = pq.read_table(base.run_dir / "samples.parquet").slice(5, 1).to_pylist()[0]
    r = renderer.render(fm.extract(env["records"][5]))
    logits = model(input_ids=torch.tensor([r.input_ids])).logits[0, :-1]
    target = torch.tensor(r.input_ids[1:])
    start = max(r.response_start, 1) - 1
    loss = torch.nn.functional.cross_entropy(logits[start:], target[start:]).item()
    assert row["loss"] == pytest.approx(loss, rel=1e-4)
    assert row["n_tokens"] == r.n_tokens and row["n_response_tokens"] == r.n_response_tokens


def test_gvendi_state_and_novelty_match_independent_computation(base):
    from safetensors.torch import load_file

    run = base.run_dir
    shards = sorted((run / "sketches").glob("shard-?????.safetensors"))
    x = torch.cat([load_file(p)["sketches"] for p in shards]).double()  # [n, k]
    y = x / x.norm(dim=1, keepdim=True)
    lam = torch.linalg.eigvalsh(y.T @ y / y.shape[0]).clamp_min(0)
    lam = lam[lam > 0]
    g = base.summary["gvendi"]
    assert g["q1"] == pytest.approx(math.exp(-(lam * lam.log()).sum().item()), rel=1e-9)
    assert g["q2"] == pytest.approx(1.0 / (lam ** 2).sum().item(), rel=1e-9)
    assert g["inf"] == pytest.approx(1.0 / lam.max().item(), rel=1e-9)
    state = pk.VendiState.load(run / "state.safetensors")  # the merged state is a loadable VendiState
    assert state.rows == 24 and state.score(1) == g["q1"] and state.score("inf") == g["inf"]
    assert state.score(2) == g["q2"]
    # each shard's own state is in state.safetensors too
    st = load_file(run / "state.safetensors")
    assert st["shard_gram"].shape == (6, 32 * 33 // 2) and st["shard_count"].tolist() == [4.0] * 6
    # novelty = ridge leverage y_i^T (Y^T Y + I)^-1 y_i (numpy, independent of the Cholesky route)
    import numpy as np

    yn = y.numpy()
    lev = np.einsum("ij,ji->i", yn, np.linalg.solve(yn.T @ yn + np.eye(32), yn.T))
    nov = pq.read_table(run / "samples.parquet").column("novelty").to_numpy()
    assert np.allclose(nov, lev, rtol=1e-9, atol=0)


def test_rerun_reuses_and_changed_config_is_refused(env, base):
    before = {p.name: p.stat().st_mtime_ns for p in (base.run_dir / "sketches").iterdir()}
    again = score_dataset([env["jsonl"]], base.run_dir, model=env["model"], **OPTS)
    after = {p.name: p.stat().st_mtime_ns for p in (base.run_dir / "sketches").iterdir()}
    assert before == after  # nothing recomputed
    assert again.summary["gvendi"] == base.summary["gvendi"]
    with pytest.raises(DataError, match=r"k: 32 -> 64.*--overwrite"):
        score_dataset([env["jsonl"]], base.run_dir, model=env["model"], **{**OPTS, "k": 64})
    with pytest.raises(DataError, match=r"seed: 0 -> 1; kind: 'rademacher' -> 'sparse'|kind: 'rademacher' -> "
                                        r"'sparse'; seed: 0 -> 1"):
        score_dataset([env["jsonl"]], base.run_dir, model=env["model"], **{**OPTS, "seed": 1, "kind": "sparse"})
    with pytest.raises(DataError, match="fields"):
        score_dataset([env["jsonl"]], base.run_dir, model=env["model"],
                      fields="prompt=answer,response=question", **OPTS)


def test_formats_give_identical_summaries_and_limit(env, base):
    root = env["root"]
    table = pa.Table.from_pylist(env["records"])
    pq.write_table(table, root / "g.parquet", row_group_size=7)
    import pyarrow.csv as pcsv

    pcsv.write_csv(table, root / "g.csv")
    numbers = lambda s: (s["n"], s["gvendi"], s["ci95"], s["skipped"], s["truncated"])  # noqa: E731
    for name in ("g.parquet", "g.csv"):
        r = score_dataset([root / name], root / f"run-{name}", model=env["model"], **OPTS)
        assert numbers(r.summary) == numbers(base.summary), name
        nov = pq.read_table(r.run_dir / "samples.parquet").column("novelty")
        assert nov.equals(pq.read_table(base.run_dir / "samples.parquet").column("novelty"))
    # a datasets folder (save_to_disk), and the JSONL split in two files scored as one dataset
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(env["records"]).save_to_disk(str(root / "g_hf"))
    (root / "g1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in env["records"][:10]))
    (root / "g2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in env["records"][10:]))
    for name, paths in (("hf", [root / "g_hf"]), ("two", [root / "g1.jsonl", root / "g2.jsonl"])):
        r = score_dataset(paths, root / f"run-{name}", model=env["model"], **OPTS)
        assert numbers(r.summary) == numbers(base.summary), name
    rows = pq.read_table(root / "run-two" / "samples.parquet").to_pylist()
    assert [(os.path.basename(x["source"]), x["line"]) for x in rows] == \
        [("g1.jsonl", i) for i in range(1, 11)] + [("g2.jsonl", i) for i in range(1, 15)]
    lim = score_dataset([env["jsonl"]], root / "run-limit", model=env["model"], limit=10, **OPTS)
    assert lim.summary["n"] == 10 and lim.summary["shards"] == 3
    assert pq.read_table(lim.run_dir / "samples.parquet").column("row_id").to_pylist() == list(range(10))


def test_bad_records_skip_and_fail(env):
    root = env["root"]
    lines = [json.dumps(r) for r in env["records"][:8]]
    lines[2] = '{"question": "broken'
    lines[5] = json.dumps({"question": "What is 2+2?", "answer": ""})
    bad = root / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    import io

    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=150)
    r = score_dataset([bad], root / "run-bad", model=env["model"], console=console, print_result=True,
                      **{**OPTS, "progress": True})
    shown = buf.getvalue()
    assert "rows/s" in shown and "G-Vendi q=1" in shown  # the progress bars and the printed summary
    assert "bad.jsonl:3" in shown and "bad.jsonl:6" in shown  # bad rows reported with file and line
    assert r.summary["n"] == 6 and r.summary["skipped"] == {"empty_response": 1, "malformed_record": 1}
    t = pq.read_table(r.run_dir / "samples.parquet").to_pylist()
    assert [x["skipped_reason"] for x in t].count(None) == 6
    assert t[2]["skipped_reason"] == "malformed_record" and t[2]["line"] == 3 and t[2]["novelty"] is None
    with pytest.raises(DataError, match=r"bad\.jsonl:3: .*--on-bad-record"):
        score_dataset([bad], root / "run-bad-fail", model=env["model"], on_bad_record="fail", **OPTS)


def test_user_mistakes_are_one_line_errors(env):
    root = env["root"]
    with pytest.raises(DataError, match=r"'prompt_text'.*fields present: question, answer"):
        score_dataset([env["jsonl"]], root / "x1", model=env["model"], fields="prompt=prompt_text,response=answer",
                      **OPTS)
    empty = root / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        score_dataset([empty], root / "x2", model=env["model"], **OPTS)
    with pytest.raises(DataError, match="local path"):
        score_dataset([env["jsonl"]], root / "x3", model="nobody/no-such-model", **OPTS)
    with pytest.raises(DataError, match="not found|No such|does not exist"):
        score_dataset([root / "missing.jsonl"], root / "x4", model=env["model"], **OPTS)
    with pytest.raises(DataError, match="--params"):
        score_dataset([env["jsonl"]], root / "x5", model=env["model"], params="^nothing$", **OPTS)


def test_a_sample_with_a_non_finite_loss_is_kept_out_and_counted(env, tmp_path):
    """An untied tiny Qwen2 whose embedding row of a token used by one sample only is +inf: that sample's
    loss and sketch are NaN; it is counted as not_finite and left out, the other samples are unaffected."""
    import transformers

    from prism_kernels.data import FieldMap, Renderer

    tok = transformers.AutoTokenizer.from_pretrained(env["model"])
    renderer, fm = Renderer(tok, 160), FieldMap(kind="pair", prompt="question", response="answer")
    records = env["records"][:8]
    ids = [set(renderer.render(fm.extract(r)).input_ids) for r in records]
    unique = [(t, i) for i, s in enumerate(ids) for t in s if sum(t in o for o in ids) == 1]
    token, victim = unique[0]
    cfg = transformers.Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                   tie_word_embeddings=False, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        model.model.embed_tokens.weight[token] = float("inf")
    path = tmp_path / "inf-model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    r = score_dataset([data], tmp_path / "run", model=str(path), **OPTS)
    assert r.summary["n"] == 7 and r.summary["skipped"] == {"not_finite": 1}
    rows = pq.read_table(r.run_dir / "samples.parquet").to_pylist()
    assert [x["finite"] for x in rows] == [i != victim for i in range(8)]
    assert rows[victim]["skipped_reason"] == "not_finite" and rows[victim]["novelty"] is None
    assert all(math.isfinite(x["loss"]) and x["novelty"] > 0 for i, x in enumerate(rows) if i != victim)


def test_pipeline_finishes_good_shards_and_raises_a_stage_error(base, tmp_path):
    """run_local: a failing reader (a shard the plan does not have) stops the pipeline with its error, after
    the shards before it were computed and written; a recomputed shard has the same contents bit for bit."""
    from prism_kernels.score import ShardContext, run_local, run_shard

    from safetensors import safe_open

    def contents(path):  # tensors and metadata (safetensors orders the metadata keys at random)
        with safe_open(str(path), "pt") as f:
            return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}

    shard2 = base.run_dir / "sketches" / "shard-00002.safetensors"
    ctx = ShardContext.from_run_dir(base.run_dir)
    meta, tensors = contents(shard2)
    done = []
    with pytest.raises(Exception):
        run_local(ctx, [2, 999], done.append)
    assert [r.shard for r in done] == [2]
    meta2, tensors2 = contents(shard2)
    assert meta2 == meta and tensors2.keys() == tensors.keys()
    assert all(torch.equal(tensors[k], tensors2[k]) for k in tensors)  # recomputed bit for bit
    result = run_shard(ctx, 3)
    assert (result.shard, result.start, result.stop, result.sketched) == (3, 12, 16, 4)


def test_a_run_directory_in_use_is_refused(env, base):
    from prism_kernels.score import RunDir

    held = RunDir(base.run_dir).lock()  # as another prism score process would hold it
    try:
        with pytest.raises(DataError, match="in use by another prism score"):
            score_dataset([env["jsonl"]], base.run_dir, model=env["model"], **OPTS)
    finally:
        held.close()
    assert score_dataset([env["jsonl"]], base.run_dir, model=env["model"], **OPTS).summary["n"] == 24
