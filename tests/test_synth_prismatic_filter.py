"""Issue 10, item 5 (first check): Prismatic's sparse-cluster filter, fed a candidate stream drawn from GSM8K
and SVAMP against a GSM8K pool, keeps a set whose G-Vendi (pool + kept) beats random selections of the same
size from the same stream (10 draws), on each of 5 draws of pool and stream.

Real components throughout: GSM8K / SVAMP rows read from PRISM_SHARED_DATA (default ../shared/data; skipped
when absent), the shipped demo proxy (prism_kernels/assets/demo-lm, a trained Qwen2 loaded through
from_pretrained), per-sample gradient sketches from pk.GradientSketcher (sparse JL, k = 1024), faiss k-means,
pk.vendi_score.

Why the trained proxy: with a randomly initialised tiny Qwen2 the GSM8K sketches are almost orthogonal
(mean cosine 0.05), clusters carry no meaning and the filter only ties with random picks (measured here:
mean margin +0.006 / +0.07 over 5 draws with k-means++ / random seeding, 2-4 of 5 draws above the random mean);
under the trained demo proxy the kept set beats all 10 random picks in every draw.
"""

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

import prism_kernels as pk
from prism_kernels import _backends

transformers = pytest.importorskip("transformers")
pytest.importorskip("faiss")

from prism_kernels.synth.cluster import SparseClusterFilter, spherical_kmeans  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("PRISM_SHARED_DATA", REPO.parent / "shared" / "data"))
pytestmark = [
    pytest.mark.skipif(not (DATA / "gsm8k" / "train.jsonl").exists() or not (DATA / "svamp" / "SVAMP.json").exists(),
                       reason=f"GSM8K / SVAMP not found under {DATA} (set PRISM_SHARED_DATA)"),
    pytest.mark.skipif(_backends.compiled() is None, reason="prism_kernels._C not built"),
]

N_POOL, N_GSM, N_SVAMP, K, MAX_LEN = 400, 100, 100, 1024, 192
DRAWS, POOL, STREAM = 5, 300, 100  # per draw: a pool of 300 of the 400, a stream of 50 GSM8K + 50 SVAMP


def _rows():
    with open(DATA / "gsm8k" / "train.jsonl") as f:
        gsm = [json.loads(line) for line in f]
    with open(DATA / "svamp" / "SVAMP.json") as f:
        svamp = json.load(f)
    rng = np.random.default_rng(0)
    gi = rng.permutation(len(gsm))[:N_POOL + N_GSM]
    pool = [(gsm[i]["question"], gsm[i]["answer"]) for i in gi[:N_POOL]]
    cand = [(gsm[i]["question"], gsm[i]["answer"]) for i in gi[N_POOL:]]
    for i in rng.permutation(len(svamp))[:N_SVAMP]:
        s = svamp[i]
        value = f"{s['Answer']:g}"
        cand.append((s["Body"].strip() + " " + s["Question"].strip(), f"{s['Equation'].strip()} = {value}\n#### {value}"))
    return pool, cand, np.array([0] * N_GSM + [1] * N_SVAMP)


@pytest.fixture(scope="module")
def sketches():
    from prism_kernels.demo import DEMO_MODEL_DIR

    if not (DEMO_MODEL_DIR / "model.safetensors").exists():
        pytest.skip(f"the demo proxy is not at {DEMO_MODEL_DIR}")
    torch.set_num_threads(1)  # a busy 2-core machine: OpenMP spinning costs more than it gains here
    pool, cand, source = _rows()
    tok = transformers.AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
    model = transformers.AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR).eval()
    sketcher = pk.GradientSketcher(model, k=K, kind="sparse", seed=0)

    def sketch(rows):
        out = []
        for b in range(0, len(rows), 32):
            ids, labels = [], []
            for q, a in rows[b:b + 32]:
                prompt = tok("Question: " + q + "\nAnswer: ")["input_ids"]
                resp = (tok(a)["input_ids"] + [tok.eos_token_id])[:MAX_LEN // 2]
                prompt = prompt[-(MAX_LEN - len(resp)):]  # cut the prompt from the left, keep the response
                ids.append(prompt + resp)
                labels.append([-100] * len(prompt) + resp)
            width = max(map(len, ids))
            x = torch.tensor([r + [0] * (width - len(r)) for r in ids])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids])
            y = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
            s, finite = sketcher.sketch(x, mask, labels=y)
            assert finite.all()
            out.append(s)
        return torch.cat(out).numpy()

    return sketch(pool), sketch(cand), source


def _draw(pool_all, cand_all, source_all, d):
    """Draw d: a pool of POOL GSM8K rows and an interleaved stream of STREAM/2 GSM8K + STREAM/2 SVAMP rows."""
    rng = np.random.default_rng(1000 + d)
    pool = pool_all[rng.permutation(len(pool_all))[:POOL]]
    pick = np.concatenate([rng.permutation(np.flatnonzero(source_all == s))[:STREAM // 2] for s in (0, 1)])
    pick = pick[rng.permutation(len(pick))]
    return pool, cand_all[pick], source_all[pick]


def _score(pool, cand, keep):
    """G-Vendi of pool + kept, and of pool + 10 random picks of the same size from the stream."""
    n = int(keep.sum())
    kept = pk.vendi_score(np.concatenate([pool, cand[keep]]))
    draws = [pk.vendi_score(np.concatenate([pool, cand[np.random.default_rng(100 + t).choice(len(cand), n,
                                                                                             replace=False)]]))
             for t in range(10)]
    return kept, draws


@pytest.mark.parametrize("init", ["random", "kmeans++"])
def test_filter_beats_random_selection_in_gvendi(sketches, init):
    """On each of 5 draws of pool and stream, the live-count filter's kept set beats at least 8 of 10 random
    picks of the same size (and their mean). The sizes-before-the-round rule (DESIGN.md section 1) is measured
    beside it and printed."""
    pool_all, cand_all, source_all = sketches
    for d in range(DRAWS):
        pool, cand, source = _draw(pool_all, cand_all, source_all, d)
        clustering = spherical_kmeans(pool, ratio=0.1, seed=0, init=init)
        keep = np.array([x.keep for x in SparseClusterFilter.from_clustering(clustering).decide(cand)])
        trap = np.array([x.keep for x in SparseClusterFilter.from_clustering(clustering).decide(cand, accept=False)])
        assert 0 < keep.sum() < len(cand)
        kept, draws = _score(pool, cand, keep)
        trap_kept, trap_draws = _score(pool, cand, trap)
        wins = sum(kept > r for r in draws)
        print(f"\n{init} draw {d}: kept {int(keep.sum())} ({int((keep & (source == 1)).sum())} SVAMP), G-Vendi pool "
              f"{pk.vendi_score(pool):.3f}, pool+kept {kept:.3f}, pool+random mean {np.mean(draws):.3f} "
              f"(max {max(draws):.3f}), beats {wins}/10 | before-the-round rule: kept {int(trap.sum())} "
              f"({int((trap & (source == 1)).sum())} SVAMP), {trap_kept:.3f} vs {np.mean(trap_draws):.3f}")
        assert wins >= 8 and kept > np.mean(draws)


def test_outlier_extension_on_the_same_stream(sketches):
    """The opt-in outlier rule (--outlier-quantile 0.1) on the same 5 draws: measured and printed beside the
    paper's rule; asserted to beat the random picks' mean on every draw."""
    from prism_kernels.synth.cluster import outlier_cutoff

    pool_all, cand_all, source_all = sketches
    for d in range(DRAWS):
        pool, cand, source = _draw(pool_all, cand_all, source_all, d)
        clustering = spherical_kmeans(pool, ratio=0.1, seed=0)
        cut = outlier_cutoff(clustering.similarity, 0.1)
        filt = SparseClusterFilter(clustering.centroids, clustering.sizes, outlier_similarity=cut)
        keep = np.array([x.keep for x in filt.decide(cand)])
        kept, draws = _score(pool, cand, keep)
        print(f"\noutliers (cut-off {cut:.3f}) draw {d}: kept {int(keep.sum())} "
              f"({int((keep & (source == 1)).sum())} SVAMP), pool+kept {kept:.3f}, pool+random mean "
              f"{np.mean(draws):.3f} (max {max(draws):.3f}), beats {sum(kept > r for r in draws)}/10")
        assert 0 < keep.sum() < len(cand) and kept > np.mean(draws)
