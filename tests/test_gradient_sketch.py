"""GradientSketcher on tiny Qwen2 and Llama models built from configs and loaded through
from_pretrained: every sample's sketch equals R g_b, with g_b the sample's gradient from a
one-sample backward and R recovered by sketching basis vectors with the same seed/block/offset."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

import prism_kernels as pk
from prism_kernels import _backends

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(_backends.compiled() is None, reason="prism_kernels._C not built")

VOCAB = 61
K = 64
PAD = 0


def _config(family, tied):
    common = dict(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  tie_word_embeddings=tied, pad_token_id=PAD)
    if family == "qwen2":
        return transformers.Qwen2Config(**common)
    return transformers.LlamaConfig(**common)


_MODELS = {}


def tiny_model(family, tied, tmp_path_factory):
    key = (family, tied)
    if key not in _MODELS:
        torch.manual_seed(1)
        cfg = _config(family, tied)
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
        with torch.no_grad():  # non-trivial norms
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.add_(0.1 * torch.randn_like(p))
        path = tmp_path_factory.mktemp(f"{family}_{tied}")
        model.save_pretrained(path)
        _MODELS[key] = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    return _MODELS[key]


def make_batch(lengths, side, seed=0):
    """Ragged samples padded on `side`; labels mark the last half of each sample as the response."""
    gen = torch.Generator().manual_seed(seed)
    steps = max(lengths)
    ids = torch.full((len(lengths), steps), PAD, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    samples = []
    for b, n in enumerate(lengths):
        tokens = torch.randint(1, VOCAB, (n,), generator=gen)
        lab = tokens.clone()
        lab[: n // 2] = -100
        sl = slice(steps - n, steps) if side == "left" else slice(0, n)
        ids[b, sl], mask[b, sl], labels[b, sl] = tokens, 1, lab
        samples.append((tokens, lab))
    return ids, mask, labels, samples


def true_gradients(model, tokens, lab):
    """{canonical name: gradient} of one unpadded sample's mean response loss."""
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=tokens[None]).logits[0, :-1]
    target = lab[1:]
    valid = target != -100
    loss = torch.nn.functional.cross_entropy(logits[valid], target[valid])
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


_R = {}


def projection_of(name, shape, kind, seed):
    """R for one parameter recovered by sketching basis vectors: [numel, K] (sketch = g_flat @ R)."""
    key = (name, tuple(shape), kind, seed)
    if key not in _R:
        block = pk.param_block(name)
        if kind == "kronecker" and len(shape) == 2:
            k_in, k_out = pk.kronecker_factors(K)
            d_out, d_in = shape
            p_in = pk.sketch(torch.eye(d_in), k_in, "rademacher", seed, block, 0)            # [d_in, k_in]
            p_out = pk.sketch(torch.eye(d_out), k_out, "rademacher", seed, block, pk.KRON_OUT_OFFSET)
            # vec(P_out W P_in^T)[p k_in + q] = sum_{o,i} P_out[p,o] P_in[q,i] W[o,i]
            _R[key] = torch.einsum("op,iq->oipq", p_out, p_in).reshape(d_out * d_in, k_out * k_in)
        else:
            dense = "rademacher" if kind == "kronecker" else kind
            numel = int(torch.tensor(shape).prod())
            _R[key] = pk.sketch(torch.eye(numel), K, dense, seed, block, 0)
    return _R[key]


def expected_sketch(model, grads, kind, seed, selected=None):
    out = torch.zeros(K, dtype=torch.float64)
    for name, g in grads.items():
        if selected is not None and name not in selected:
            continue
        out += g.reshape(-1).double() @ projection_of(name, g.shape, kind, seed).double()
    return out.float()


def assert_sketches_match(got, expected):
    # fp32 tolerance: the per-sample gradients are computed in a different order (batched, padded).
    scale = expected.norm()
    assert (got - expected).norm() <= 2e-4 * scale + 1e-6, (got - expected).norm() / scale


@pytest.mark.parametrize("family, tied", [("qwen2", True), ("llama", False)])
@pytest.mark.parametrize("kind", ["rademacher", "gaussian", "sparse", "kronecker"])
@pytest.mark.parametrize("lengths, side", [([9], "right"), ([7, 12, 5], "left"), ([7, 12, 5], "right"),
                                           ([6, 11, 4, 9, 12, 5, 8, 10], "left")])
def test_each_sample_equals_R_times_its_gradient(family, tied, kind, lengths, side, tmp_path_factory):
    model = tiny_model(family, tied, tmp_path_factory)
    sketcher = pk.GradientSketcher(model, k=K, kind=kind, seed=5)
    ids, mask, labels, samples = make_batch(lengths, side)
    sketches, finite = sketcher.sketch(ids, mask, labels=labels)
    assert sketches.shape == (len(lengths), K) and sketches.dtype == torch.float32 and finite.all()
    for b, (tokens, lab) in enumerate(samples):
        assert_sketches_match(sketches[b], expected_sketch(model, true_gradients(model, tokens, lab), kind, 5))


def test_response_mask_equals_labels(tmp_path_factory):
    model = tiny_model("qwen2", True, tmp_path_factory)
    sketcher = pk.GradientSketcher(model, k=K, seed=1)
    ids, mask, labels, _ = make_batch([7, 12, 5], "left")
    a, _ = sketcher.sketch(ids, mask, labels=labels)
    b, _ = sketcher.sketch(ids, mask, response_mask=labels != -100)
    torch.testing.assert_close(a, b)


def test_independent_of_batch_composition_and_order(tmp_path_factory):
    model = tiny_model("llama", False, tmp_path_factory)
    sketcher = pk.GradientSketcher(model, k=K, kind="sparse", seed=2)
    ids, mask, labels, _ = make_batch([6, 11, 4, 9], "right")
    full, _ = sketcher.sketch(ids, mask, labels=labels)
    perm = torch.tensor([2, 0, 3, 1])
    shuffled, _ = sketcher.sketch(ids[perm], mask[perm], labels=labels[perm])
    torch.testing.assert_close(shuffled, full[perm], rtol=1e-4, atol=1e-5)
    single, _ = sketcher.sketch(ids[1:2, :11], mask[1:2, :11], labels=labels[1:2, :11])
    torch.testing.assert_close(single[0], full[1], rtol=1e-4, atol=1e-5)


def test_selection_linear_and_regex(tmp_path_factory):
    model = tiny_model("qwen2", True, tmp_path_factory)
    ids, mask, labels, samples = make_batch([8, 10], "left")
    grads = true_gradients(model, *samples[0])
    linear = pk.GradientSketcher(model, k=K, seed=3, params="linear")
    names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) for n in [n]}
    selected = {f"{n}.{p}" for n in names for p, _ in dict(model.named_modules())[n].named_parameters()}
    selected |= {"model.embed_tokens.weight"}  # tied with lm_head.weight, a Linear weight
    got, _ = linear.sketch(ids, mask, labels=labels)
    assert_sketches_match(got[0], expected_sketch(model, grads, "rademacher", 3, selected))
    mlp = pk.GradientSketcher(model, k=K, seed=3, params=r"\.mlp\.")
    got, _ = mlp.sketch(ids, mask, labels=labels)
    assert_sketches_match(got[0], expected_sketch(model, grads, "rademacher", 3, {n for n in grads if ".mlp." in n}))
    # A parameter's matrix does not depend on the selection: the parts add up to the whole.
    rest = pk.GradientSketcher(model, k=K, seed=3, params=lambda n: ".mlp." not in n)
    whole = pk.GradientSketcher(model, k=K, seed=3)
    torch.testing.assert_close(mlp.sketch(ids, mask, labels=labels)[0] + rest.sketch(ids, mask, labels=labels)[0],
                               whole.sketch(ids, mask, labels=labels)[0], rtol=1e-4, atol=1e-6)


def test_nonfinite_sample_is_flagged_alone(tmp_path_factory):
    model = tiny_model("llama", False, tmp_path_factory)
    sketcher = pk.GradientSketcher(model, k=K, seed=4)
    ids, mask, labels, _ = make_batch([7, 9, 8], "right")
    clean, finite = sketcher.sketch(ids, mask, labels=labels)
    emb = model.model.embed_tokens

    def poison(module, inputs, output):
        output = output.clone()
        output[1, 2, 0] = float("nan")
        return output

    handle = emb.register_forward_hook(poison)
    try:
        out, finite = sketcher.sketch(ids, mask, labels=labels)
    finally:
        handle.remove()
    assert finite.tolist() == [True, False, True]
    torch.testing.assert_close(out[[0, 2]], clean[[0, 2]])


def test_sample_without_response_is_an_error_naming_it(tmp_path_factory):
    model = tiny_model("qwen2", True, tmp_path_factory)
    sketcher = pk.GradientSketcher(model, k=K)
    ids, mask, labels, _ = make_batch([7, 9, 8], "left")
    labels[2] = -100
    with pytest.raises(ValueError, match=r"sample\(s\) \[2\] have no response tokens"):
        sketcher.sketch(ids, mask, labels=labels)


def test_bad_arguments(tmp_path_factory):
    model = tiny_model("qwen2", True, tmp_path_factory)
    with pytest.raises(ValueError, match="k must be"):
        pk.GradientSketcher(model, k=0)
    with pytest.raises(ValueError, match="kind must be one of"):
        pk.GradientSketcher(model, kind="fourier")
    with pytest.raises(ValueError, match="selects no trainable parameter"):
        pk.GradientSketcher(model, params="no_such_parameter")
    sketcher = pk.GradientSketcher(model, k=K)
    ids, mask, labels, _ = make_batch([7, 9], "left")
    with pytest.raises(ValueError, match="attention_mask must be"):
        sketcher.sketch(ids, mask[:, 1:], labels=labels)
    with pytest.raises(ValueError, match="labels must be"):
        sketcher.sketch(ids, mask, labels=labels[:1])


def test_metadata_travels_and_mixing_is_an_error(tmp_path_factory):
    model = tiny_model("qwen2", True, tmp_path_factory)
    ids, mask, labels, _ = make_batch([7, 9], "left")
    a = pk.GradientSketcher(model, k=K, seed=1).sketch(ids, mask, labels=labels)
    b = pk.GradientSketcher(model, k=K, seed=1).sketch(ids, mask, labels=labels)
    c = pk.GradientSketcher(model, k=K, seed=2).sketch(ids, mask, labels=labels)
    assert a.meta.seed == 1 and a.meta.k == K and a.meta.kind == "rademacher" and a.meta.stream_version == 1
    assert a.meta.package_version == pk.__version__ and a.meta.model_fingerprint
    merged = pk.concat_sketches([a, b])
    assert merged.sketches.shape == (4, K) and merged.finite.shape == (4,)
    with pytest.raises(ValueError, match="incompatible sketches.*seed"):
        pk.concat_sketches([a, c])


@pytest.mark.parametrize("kind", ["rademacher", "sparse", "kronecker"])
def test_backends_and_thread_counts_agree(kind, tmp_path_factory):
    # Stated tolerance: the same matrices everywhere; only fp32 summation order differs, so the
    # sketches agree to 1e-5 of their norm across backends and thread counts.
    model = tiny_model("qwen2", True, tmp_path_factory)
    ids, mask, labels, _ = make_batch([7, 12, 5], "right")
    base = pk.GradientSketcher(model, k=K, kind=kind, seed=8, backend="cpu").sketch(ids, mask, labels=labels)[0]
    others = {"reference": pk.GradientSketcher(model, k=K, kind=kind, seed=8, backend="reference")}
    if _backends._unavailable_reason("triton", torch.device("cpu")) is None and kind == "rademacher":
        others["triton"] = pk.GradientSketcher(model, k=K, kind=kind, seed=8, backend="triton")
    for name, sketcher in others.items():
        got = sketcher.sketch(ids, mask, labels=labels)[0]
        assert (got - base).norm() <= 1e-5 * base.norm(), name
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = pk.GradientSketcher(model, k=K, kind=kind, seed=8, backend="cpu").sketch(ids, mask, labels=labels)[0]
    finally:
        torch.set_num_threads(threads)
    assert (one - base).norm() <= 1e-5 * base.norm()
