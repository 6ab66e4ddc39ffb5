"""EmbedSDG's pieces on real components: embeddings of GSM8K text under a tiny Qwen2 loaded through
from_pretrained, the reducers against scikit-learn / numpy, sparse windows and seed pairs on a layout
whose answer is known by construction, interpolated points inside their windows (PCA, SVD: by linearity;
t-SNE: measured), decoding through inputs_embeds against decoding the same tokens by id, and the clear
error for a student that cannot take inputs_embeds."""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_models import GSM8K_TRAIN, gsm8k_records, tiny_causal_lm, tiny_tokenizer  # noqa: E402

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from prism_kernels.synth.embed import Embedder, StudentError, check_embeddable, interpolate, load_student  # noqa: E402
from prism_kernels.synth.embedsdg import Decoder, density_map, in_window, interpolated_embeddings  # noqa: E402
from prism_kernels.synth.reduce import PCAReducer, fit_reducer, load_reducer  # noqa: E402

needs_data = pytest.mark.skipif(not GSM8K_TRAIN.exists(), reason=f"GSM8K not found at {GSM8K_TRAIN} "
                                "(set PRISM_SHARED_DATA)")


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    if not GSM8K_TRAIN.exists():
        pytest.skip(f"GSM8K not found at {GSM8K_TRAIN}")
    tmp = tmp_path_factory.mktemp("embedsdg_student")
    tok = tiny_tokenizer(tmp, chat_template=True)
    path = tiny_causal_lm(tmp, tok, hidden_size=32)
    model, tokenizer = load_student(path)
    return model, tokenizer


@pytest.fixture(scope="module")
def texts():
    if not GSM8K_TRAIN.exists():
        pytest.skip(f"GSM8K not found at {GSM8K_TRAIN}")
    return [r["question"] + "\n" + r["answer"] for r in gsm8k_records(160)]


# ---------------------------------------------------------------------------------------------- embed


@needs_data
def test_embeddings_are_mask_weighted_sums_of_token_embeddings(student, texts):
    model, tokenizer = student
    emb = Embedder(model, tokenizer, batch_size=7)  # ragged batches with padding
    x = emb.embed(texts[:20])
    assert x.shape == (20, 32) and x.dtype == torch.float32
    weight = model.get_input_embeddings().weight.detach()
    for i in (0, 6, 7, 19):
        ids = tokenizer(texts[i], add_special_tokens=False)["input_ids"]
        expected = weight[torch.tensor(ids)].double().sum(0)  # oracle: rows of the table, no padding
        assert torch.allclose(x[i].double(), expected, atol=1e-4, rtol=1e-5)
    # Batching does not change an embedding (padding carries zero weight).
    single = Embedder(model, tokenizer, batch_size=1).embed(texts[:8])
    assert torch.allclose(single, x[:8], atol=1e-5)
    # The sequences hold only the real tokens and sum to the embeddings.
    seqs = emb.sequences(texts[:8])
    for i, s in enumerate(seqs):
        assert s.shape[0] == len(tokenizer(texts[i], add_special_tokens=False)["input_ids"])
        assert torch.allclose(s.float().sum(0), x[i], atol=1e-4)
    # Streaming yields the same rows.
    streamed = torch.cat(list(emb.embed_stream(iter(texts[:20]))))
    assert torch.equal(streamed, x)


def test_interpolate_pads_and_sums_to_the_midpoint():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 4, generator=gen), torch.randn(9, 4, generator=gen)
    mid = interpolate(a, b)
    assert mid.shape == (9, 4)
    assert torch.allclose(mid[:5], (a + b[:5]) / 2) and torch.allclose(mid[5:], b[5:] / 2)
    assert torch.allclose(mid.sum(0), (a.sum(0) + b.sum(0)) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="same d"):
        interpolate(a, torch.randn(3, 5))


# --------------------------------------------------------------------------------------------- reduce


def _data(n=120, d=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    scales = torch.linspace(3.0, 0.2, d)
    return torch.randn(n, d, generator=gen, dtype=torch.float64) * scales + 5.0


def test_pca_matches_sklearn_up_to_the_fixed_sign():
    decomposition = pytest.importorskip("sklearn.decomposition")
    x = _data()
    for dims in (2, 3):
        reducer, coords = fit_reducer(x, "pca", dims)
        ref = decomposition.PCA(n_components=dims, svd_solver="full").fit(x.numpy())
        expected = ref.transform(x.numpy())
        signs = np.sign((coords.numpy() * expected).sum(0))
        np.testing.assert_allclose(coords.numpy(), expected * signs, atol=1e-8)
        # Our sign convention: the largest-magnitude loading of each component is positive.
        comp = reducer.components
        assert (comp.gather(1, comp.abs().argmax(1, keepdim=True)) > 0).all()
    # The large-data path (randomised, seeded) agrees with the exact one.
    import prism_kernels.synth.reduce as reduce_mod
    limit = reduce_mod.EXACT_SVD_LIMIT
    reduce_mod.EXACT_SVD_LIMIT = 0
    try:
        state = torch.get_rng_state()
        approx = PCAReducer.fit(x, 2, seed=3)
        assert torch.equal(state, torch.get_rng_state())  # global RNG untouched
    finally:
        reduce_mod.EXACT_SVD_LIMIT = limit
    exact = PCAReducer.fit(x, 2)
    assert torch.allclose(approx.components, exact.components, atol=1e-6)


def test_truncated_svd_matches_numpy_and_does_not_centre():
    x = _data()
    reducer, coords = fit_reducer(x, "svd", 2, seed=1)
    _, _, vt = np.linalg.svd(x.numpy(), full_matrices=False)
    expected = x.numpy() @ vt[:2].T
    signs = np.sign((coords.numpy() * expected).sum(0))
    np.testing.assert_allclose(coords.numpy(), expected * signs, rtol=1e-6, atol=1e-6)
    # Same seed, same map; the map rebuilt from its saved state transforms identically.
    again, _ = fit_reducer(x, "svd", 2, seed=1)
    assert torch.equal(again.components, reducer.components)
    rebuilt = load_reducer(reducer.meta(), reducer.state())
    assert torch.equal(rebuilt.transform(x[:5]), coords[:5])


def test_linear_reducers_map_midpoints_to_midpoints():
    x = _data()
    for method in ("pca", "svd"):
        reducer, coords = fit_reducer(x, method, 3)
        mid = reducer.transform((x[:10] + x[10:20]) / 2)
        assert torch.allclose(mid, (coords[:10] + coords[10:20]) / 2, atol=1e-9)


def test_tsne_fits_and_places_new_points_near_their_neighbours():
    x = _data(n=150, d=8)
    x[:75] += 8.0  # two well-separated groups
    reducer, coords = fit_reducer(x, "tsne", 2, seed=0)
    assert coords.shape == (150, 2)
    # A new point next to group 0 lands nearer group 0's centre than group 1's.
    new = reducer.transform(x[:3] + 0.01)
    c0, c1 = coords[:75].mean(0), coords[75:].mean(0)
    assert ((new - c0).norm(dim=1) < (new - c1).norm(dim=1)).all()
    # openTSNE re-centres its map in place on transform; ours keeps the fitted map and its frame.
    assert torch.equal(reducer.coordinates, coords)
    assert torch.equal(reducer.transform(x[:3] + 0.01), new)
    span = float((coords.max(0).values - coords.min(0).values).norm())
    assert float((new - coords[:3]).norm(dim=1).max()) < 0.05 * span  # training points land near themselves
    rebuilt = load_reducer(reducer.meta(), reducer.state(), embeddings=x)
    assert torch.equal(rebuilt.coordinates, coords)


def test_reduce_errors_name_the_argument():
    with pytest.raises(ValueError, match="unknown method 'umap'"):
        fit_reducer(_data(), "umap", 2)
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        fit_reducer(_data(), "pca", 4)
    bad = _data()
    bad[7, 2] = float("nan")
    with pytest.raises(ValueError, match="row 7 is not finite"):
        fit_reducer(bad, "pca", 2)


# ------------------------------------------------------------------------- windows on a known layout


def _known_layout():
    """Points on [0, 10]^2 with a 10x10 grid, 2x2 windows at stride 2 (windows do not overlap, so
    each point is in exactly one). Every window holds 12 points except the ones listed in `sparse`
    (corner cell -> member coordinates, one member in the window's centre cell (corner + 1)) and one
    empty window. Returns points, the expected sparse windows {corner: [member indices]}, and the
    expected seeds {corner: (lower-x member, upper-x member)}."""
    gen = np.random.default_rng(0)
    sparse = {
        (2, 6): [(2.2, 6.4), (3.5, 7.5), (3.9, 6.1)],        # 3 members, x: 2.2 < 3.5 < 3.9
        (6, 2): [(7.4, 3.3), (6.6, 2.9)],                    # 2 members, lower-x is the second
        (0, 8): [(1.2, 9.7), (0.1, 8.8), (1.9, 8.3), (0.5, 9.1)],  # 4 members
    }
    empty = (4, 4)
    points, expected = [], {}
    for cx in range(0, 10, 2):
        for cy in range(0, 10, 2):
            if (cx, cy) == empty:
                continue
            if (cx, cy) in sparse:
                start = len(points)
                points.extend(sparse[(cx, cy)])
                expected[(cx, cy)] = list(range(start, len(points)))
                continue
            # Dense window: 12 points inside [cx, cx + 2) x [cy, cy + 2), away from the edges.
            low, high = np.array([cx, cy]) + 0.05, np.array([cx, cy]) + 1.95
            points.extend(gen.uniform(low, high, size=(12, 2)).tolist())
    points.extend([(0.0, 0.0), (10.0, 10.0)])  # pin the bounding box to [0, 10]^2 (dense windows)
    pts = torch.tensor(points, dtype=torch.float64)
    seeds = {}
    for corner, members in expected.items():
        xs = pts[members, 0]
        seeds[corner] = (members[int(xs.argmin())], members[int(xs.argmax())])
    return pts, expected, seeds


def test_sparse_windows_and_seed_pairs_on_a_known_layout():
    pts, expected, seeds = _known_layout()
    dmap = density_map(pts, bins=10, window=2, stride=2, threshold=5)
    assert torch.equal(dmap.bounds, torch.tensor([[0.0, 10.0], [0.0, 10.0]], dtype=torch.float64))
    found = {tuple(c): dmap.members(m).tolist() for m, c in enumerate(dmap.windows.corners.tolist())}
    assert found == expected  # exactly the sparse windows, with their members; not the empty one
    for m, corner in enumerate(dmap.windows.corners.tolist()):
        lower, upper = dmap.pairs[m].tolist()
        assert (lower, upper) == seeds[tuple(corner)]  # opposing faces along x (square window: first axis)
        lo, hi = dmap.box(m)
        assert (pts[[lower, upper]] >= lo).all() and (pts[[lower, upper]] < hi).all()
    # The window-count histogram the threshold is read from: 21 windows of 12 points (two of them with
    # the extra corner points: 13), one empty, and the three sparse ones.
    hist = dmap.window_count_histogram
    assert int(hist.sum()) == 25 and int(hist[0]) == 1 and int(hist[2]) == int(hist[3]) == int(hist[4]) == 1
    # The default threshold is a quantile of the non-empty window counts: at 0.1 it lies between the
    # sparse counts and the dense ones, so the same three windows come out.
    by_quantile = density_map(pts, bins=10, window=2, stride=2, quantile=0.1)
    assert 4 < by_quantile.threshold <= 12 and by_quantile.num_windows == 3
    # min_members drops windows with fewer members.
    assert density_map(pts, bins=10, window=2, stride=2, threshold=5, min_members=3).num_windows == 2


# ------------------------------------------------------------------- interpolation lands in the window


def _interpolated_points(student, texts, method, dims, seed=0):
    model, tokenizer = student
    emb = Embedder(model, tokenizer)
    x = emb.embed(texts)
    reducer, coords = fit_reducer(x, method, dims, seed=seed)
    dmap = density_map(coords, bins=12 if dims == 2 else 6, window=3 if dims == 2 else 2, quantile=0.5)
    assert dmap.num_windows > 0
    seqs = []
    for a, b in dmap.pairs.tolist():
        sa, sb = emb.sequences([texts[a], texts[b]])
        seqs.append(interpolate(sa, sb))
    points = reducer.transform(interpolated_embeddings(seqs))
    sizes = dmap.windows.counts
    return dmap, coords, points, in_window(dmap, points, torch.arange(dmap.num_windows)), sizes


@needs_data
@pytest.mark.parametrize("method,dims", [("pca", 2), ("pca", 3), ("svd", 2)])
def test_linear_reductions_put_every_interpolation_in_its_window(student, texts, method, dims):
    dmap, coords, points, inside, sizes = _interpolated_points(student, texts, method, dims)
    two = sizes >= 2  # both seeds are members: the proof in embedsdg's docstring applies
    assert two.sum() > 0
    assert inside[two].all(), f"{method}: windows {two.nonzero().flatten()[~inside[two]].tolist()} missed"
    # And the point is (to rounding) the midpoint of its seeds' coordinates.
    mid = (coords[dmap.pairs[:, 0]] + coords[dmap.pairs[:, 1]]) / 2
    assert torch.allclose(points, mid, atol=1e-6 * float(coords.abs().max()))


@needs_data
def test_tsne_fraction_of_interpolations_in_their_window_is_measured(student, texts, capsys):
    dmap, coords, points, inside, sizes = _interpolated_points(student, texts, "tsne", 2)
    two = sizes >= 2
    fraction = float(inside[two].float().mean())
    with capsys.disabled():
        print(f"\n[embedsdg] t-SNE: {int(inside[two].sum())}/{int(two.sum())} interpolated points inside their "
              f"window ({fraction:.2f}); PCA/SVD: all, by linearity")
    # openTSNE places a new point by optimising it against the fixed map: it lands on the map's extent.
    lo, hi = coords.min(0).values, coords.max(0).values
    span = hi - lo
    assert ((points >= lo - span) & (points <= hi + span)).all()


# --------------------------------------------------------------------------------------------- decode


@needs_data
def test_decoding_token_embeddings_equals_decoding_the_same_token_ids(student, texts):
    """Feeding a text's own weighted sequence as inputs_embeds must decode exactly like feeding the
    prompt and that text's token ids (greedy): the inputs_embeds path is the ids path."""
    model, tokenizer = student
    emb = Embedder(model, tokenizer)
    decoder = Decoder(model, tokenizer, max_new_tokens=12, batch_size=3)
    sample = [t[:120] for t in texts[:3]]
    got = decoder.decode(emb.sequences(sample))
    for text, out in zip(sample, got):
        ids = decoder.prefix_ids + tokenizer(text, add_special_tokens=False)["input_ids"] + decoder.suffix_ids
        ref = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             do_sample=False, max_new_tokens=12, pad_token_id=tokenizer.pad_token_id)
        assert out == tokenizer.decode(ref[0, len(ids):], skip_special_tokens=True).strip()
    # The chat template wraps the copy prompt: the embeddings sit inside the user turn.
    assert tokenizer.decode(decoder.suffix_ids).startswith("<|im_end|>")


def test_a_student_that_cannot_take_inputs_embeds_is_a_clear_error(tmp_path):
    bert = transformers.BertForMaskedLM(transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1,
                                                                 num_attention_heads=2, intermediate_size=32))
    with pytest.raises(StudentError, match=r"BertForMaskedLM .*inputs_embeds"):
        Decoder(bert, None)

    class Bag(torch.nn.Module):  # a model without get_input_embeddings
        def __init__(self):
            super().__init__()
            self.table = torch.nn.EmbeddingBag(10, 4)

    with pytest.raises(StudentError, match=r"^student: Bag has no input token embeddings"):
        check_embeddable(Bag())
    assert issubclass(StudentError, ValueError)
