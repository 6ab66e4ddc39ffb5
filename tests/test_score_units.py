"""Small pieces of the score layer without a model: atomic writes, the batch cutter, packed Grams and the
streamed safetensors writer, config differences."""

import os

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from prism_kernels.score.config import ScoreConfig, diff_identity  # noqa: E402
from prism_kernels.score.finish import pack_lower, unpack_lower, write_safetensors_stream  # noqa: E402
from prism_kernels.score.plan import cut_batches  # noqa: E402
from prism_kernels.score.rundir import atomic_write  # noqa: E402


def test_atomic_write_replaces_whole_files_or_nothing(tmp_path):
    path = tmp_path / "sub" / "f.json"
    atomic_write(path, "first")
    assert path.read_text() == "first"
    atomic_write(path, b"second")
    assert path.read_bytes() == b"second"
    atomic_write(path, lambda tmp: open(tmp, "w").write("third"))
    assert path.read_text() == "third"

    def broken(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "third"  # untouched
    assert os.listdir(path.parent) == ["f.json"]  # no temporary file left


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 300), max_size=60), st.integers(1, 2000))
def test_cut_batches_sorted_bounded_and_complete(lengths, budget):
    batches = cut_batches(lengths, budget)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every row once
    assert flat == sorted(range(len(lengths)), key=lambda i: (lengths[i], i))  # length order, ties by index
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget
    for b, nxt in zip(batches, batches[1:]):  # greedy: the next row would not have fitted
        assert (len(b) + 1) * lengths[nxt[0]] > budget


def test_packed_gram_and_streamed_safetensors(tmp_path):
    from safetensors.torch import load_file

    g = torch.randn(7, 7, dtype=torch.float64)
    g = g + g.T
    packed = pack_lower(g)
    assert packed.shape == (28,)
    assert torch.equal(unpack_lower(packed, 7), g)
    assert torch.equal(unpack_lower(packed, 7, symmetric=False), torch.tril(g))
    parts = [torch.arange(6, dtype=torch.float64), torch.arange(6, 12, dtype=torch.float64)]
    write_safetensors_stream(tmp_path / "s.safetensors",
                             [("a", "F64", [2, 6], lambda: parts),
                              ("b", "I64", [3], lambda: [torch.tensor([1, 2, 3])])],
                             {"note": "x"})
    t = load_file(tmp_path / "s.safetensors")
    assert torch.equal(t["a"], torch.arange(12, dtype=torch.float64).reshape(2, 6))
    assert t["b"].tolist() == [1, 2, 3]


def test_identity_differences_are_named():
    a = ScoreConfig(data=["x.jsonl"], data_identity="1", model_identity="m")
    b = a.replace(k=512, seed=3)
    c = a.replace(data_identity="2")
    assert diff_identity(a.identity(), b.identity()) == ["k: 1024 -> 512", "seed: 0 -> 3"]
    assert diff_identity(a.identity(), c.identity()) == ["data: the input files changed (size or modification time)"]
    assert a.hash() != b.hash() and a.hash() == a.replace(workers=8, engine="ray").hash()  # runtime is not identity


def test_one_list_of_sketch_kinds():
    # prism score accepts exactly the kinds GradientSketcher has (the kernels' kinds + kronecker), listed once.
    import prism_kernels as pk
    from prism_kernels.gradient_sketch import SKETCHER_KINDS
    from prism_kernels.score import config

    assert config.KINDS is SKETCHER_KINDS
    assert SKETCHER_KINDS == (*pk.SKETCH_KINDS, "kronecker")
    ScoreConfig(data=["x.jsonl"], kind="kronecker").validate()
    with pytest.raises(Exception, match="kind"):
        ScoreConfig(data=["x.jsonl"], kind="dense").validate()
