"""The Gaussian sketch constants are written once: csrc/include/prism/gaussian_table.h (C++, CUDA)
and prism_kernels/_gaussian_table.py (Triton, reference) hold the same numbers, each the double
nearest its definition. (The bits of the stream they make are pinned by test_sketch_stream.py.)"""

import math
import re
from pathlib import Path

from prism_kernels import _gaussian_table as T

HEADER = Path(__file__).resolve().parent.parent / "csrc" / "include" / "prism" / "gaussian_table.h"
SERIES = {"log_series": "LOG_SERIES", "sin_series": "SIN_SERIES", "cos_series": "COS_SERIES"}
SCALARS = {"kSqrt2": "SQRT2", "kLn2": "LN2", "kTwoPowM24": "TWO_POW_M24", "kTwoPowM22": "TWO_POW_M22",
           "kHalfPi": "HALF_PI"}


def header_table() -> dict[str, tuple[float, ...] | float]:
    text = HEADER.read_text()
    table: dict[str, tuple[float, ...] | float] = {}
    for name, body, count in re.findall(r"constexpr Horner (\w+)\(\) \{\s*return Horner\{\{(.*?)\},\s*(\d+)\};",
                                        text, re.S):
        values = tuple(float(v) for v in re.findall(r"PRISM_F32\(([^)]+)\)", body))
        assert len(values) == int(count), (name, values, count)
        table[name] = values
    for name, value in re.findall(r"constexpr float (k\w+) = PRISM_F32\(([^)]+)\);", text):
        table[name] = float(value)
    return table


def test_python_constants_equal_the_header():
    table = header_table()
    assert set(table) == set(SERIES) | set(SCALARS)
    for header_name, python_name in {**SERIES, **SCALARS}.items():
        assert getattr(T, python_name) == table[header_name], header_name


def test_every_constant_is_its_definition():
    assert T.LOG_SERIES == tuple(1 / k for k in (13, 11, 9, 7, 5, 3, 1))
    assert T.SIN_SERIES == tuple((-1) ** (k // 2) / math.factorial(k) for k in (13, 11, 9, 7, 5, 3, 1))
    assert T.COS_SERIES == tuple((-1) ** (k // 2) / math.factorial(k) for k in (16, 14, 12, 10, 8, 6, 4, 2, 0))
    assert (T.SQRT2, T.LN2, T.HALF_PI) == (math.sqrt(2), math.log(2), math.pi / 2)
    assert (T.TWO_POW_M24, T.TWO_POW_M22) == (2.0 ** -24, 2.0 ** -22)


def test_the_series_are_accurate_where_they_are_used():
    m = [0.7071067811865476 + i / 1000 * (1.4142135623730951 - 0.7071067811865476) for i in range(1001)]
    for v in m:  # ln m = 2 s P(s^2) on [sqrt(1/2), sqrt(2)]
        s = (v - 1) / (v + 1)
        p = 0.0
        for c in T.LOG_SERIES:
            p = p * s * s + c
        assert abs(2 * s * p - math.log(v)) < 1e-9
    for i in range(1001):  # sin, cos on [0, pi/2]
        x = i / 1000 * T.HALF_PI
        sp = cp = 0.0
        for c in T.SIN_SERIES:
            sp = sp * x * x + c
        for c in T.COS_SERIES:
            cp = cp * x * x + c
        assert abs(x * sp - math.sin(x)) < 1e-9 and abs(cp - math.cos(x)) < 1e-9
