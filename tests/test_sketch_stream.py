"""Golden vectors of the random stream (STREAM_VERSION 1): any change here is a deliberate,
versioned change to every sketch ever made. Checked on every backend through sketches of basis
vectors, which reproduce the matrix entries exactly (one nonzero product per output)."""

import pytest
import torch

import prism_kernels as pk
from prism_kernels.reference.sketch import _words, philox4x32_10

SEED = 0x0123456789ABCDEF
BLOCK = 0xDEADBEEF
OFFSET = (1 << 32) - 2  # the four coordinates straddle the 2^32 boundary of the counter's low word


def test_stream_version():
    assert pk.STREAM_VERSION == 1


@pytest.mark.parametrize("counter, key, expected", [
    # Random123's known-answer tests for Philox4x32-10.
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox_known_answers(counter, key, expected):
    assert tuple(int(w) for w in philox4x32_10(*counter, *key)) == expected


def test_counter_layout():
    # key = seed, counter = (j low, j high, group, block)
    words = _words(SEED, BLOCK, torch.tensor([OFFSET + 1]), torch.tensor([3]))[0]
    assert [int(w) for w in words] == [0x15C1A63E, 0xC86258B8, 0xF5F3F205, 0xB2DFD541]


RADEMACHER_COLS = [0, 1, 31, 32, 127, 128, 129, 255, 256, 299]
RADEMACHER = [[1, 1, -1, 1, 1, -1, -1, 1, -1, 1], [-1, -1, 1, -1, 1, 1, -1, 1, 1, 1],
              [1, -1, -1, -1, -1, -1, 1, 1, 1, -1], [1, 1, 1, -1, -1, 1, -1, 1, -1, 1]]
GAUSSIAN = [
    ['0x1.3f272ep-3', '0x1.a7db2ap-1', '0x1.51cc58p+0', '0x1.a103d6p-2', '-0x1.a44ad4p-1', '0x1.ea57eep-3',
     '0x1.c9166cp-1', '0x1.537f94p+0', '0x1.033a10p-1', '-0x1.3c5a08p-1'],
    ['-0x1.e45cdap+0', '0x1.1f8832p-8', '-0x1.c4f3dap+0', '0x1.023996p-3', '0x1.814784p+0', '-0x1.607642p-4',
     '-0x1.38027ap+0', '0x1.73a04ep-3', '0x1.19ee88p-1', '-0x1.188b7cp+0'],
    ['-0x1.2d2f50p-1', '0x1.0392c6p-1', '-0x1.b32ba8p-1', '-0x1.951d58p-3', '0x1.867ddap-1', '-0x1.c38cc6p-3',
     '-0x1.f04a2ap+0', '0x1.da0df0p-1', '0x1.0f3466p-1', '0x1.84e276p+0']]
SPARSE = [[(47, 1), (220, 1), (385, -1), (454, -1), (693, -1), (701, 1)],
          [(166, -1), (207, -1), (321, 1), (488, -1), (499, -1), (990, 1)],
          [(386, -1), (536, 1), (683, -1), (729, -1), (739, 1), (955, 1)]]


def _basis_sketch(backend, device, width, k, kind, s=4):
    eye = torch.eye(width, device=device)
    return pk.sketch(eye, k, kind, seed=SEED, block=BLOCK, offset=OFFSET, s=s, backend=backend).cpu()


def test_golden_rademacher(backend):
    name, device = backend
    got = _basis_sketch(name, device, 4, 300, "rademacher")
    expected = torch.tensor(RADEMACHER, dtype=torch.float32) * pk.sketch_scale(300, "rademacher")
    assert torch.equal(got[:, RADEMACHER_COLS], expected)


def test_golden_gaussian(backend):
    name, device = backend
    got = _basis_sketch(name, device, 3, 10, "gaussian")
    unscaled = torch.tensor([[float.fromhex(v) for v in row] for row in GAUSSIAN], dtype=torch.float32)
    expected = unscaled * torch.tensor(pk.sketch_scale(10, "gaussian"), dtype=torch.float32)
    assert torch.equal(got, expected)


def test_golden_sparse(backend):
    name, device = backend
    got = _basis_sketch(name, device, 3, 1000, "sparse", s=6)
    expected = torch.zeros(3, 1000)
    for j, entries in enumerate(SPARSE):
        for i, v in entries:
            expected[j, i] = v * pk.sketch_scale(1000, "sparse", 6)
    assert torch.equal(got, expected)
