"""argparse converters shared by the command-line options of the product layer (``prism score`` and the
synthesis loops), so every option rejects a bad number with the same kind of message."""

from __future__ import annotations

import argparse
import math


def int_at_least(low: int):
    """A converter for integers >= ``low``: ``type=int_at_least(1)``."""
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value

    return convert


def number_in(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False):
    """A converter for numbers in ``[low, high]`` (``(low, ...`` with ``low_open``, ``..., high)`` with
    ``high_open``)."""
    span = (f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            if math.isfinite(high) else None)
    want = f"a number in {span}" if span else f"a number {'>' if low_open else '>='} {low:g}"

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if not ((value > low if low_open else value >= low) and (value < high if high_open else value <= high)):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    return convert
