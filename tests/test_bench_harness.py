"""benchmarks/harness.py: the one statistic and the shared RESULTS.md sections."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import harness  # noqa: E402


def test_write_section_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    harness.write_section(path, "a-report", "## A\n\nold a\n")
    assert path.read_text() == "<!-- a-report:begin -->\n## A\n\nold a\n<!-- a-report:end -->\n"
    harness.write_section(path, "b-report", "## B\nb")  # a section the file lacks goes at the end
    path.write_text(path.read_text() + "\nhand-written notes\n")
    harness.write_section(str(path), "a-report", "## A\nnew a")
    assert path.read_text() == ("<!-- a-report:begin -->\n## A\nnew a\n<!-- a-report:end -->\n\n"
                                "<!-- b-report:begin -->\n## B\nb\n<!-- b-report:end -->\n\nhand-written notes\n")
    harness.write_section(path, "b-report", "B again")
    assert "B again\n<!-- b-report:end -->\n\nhand-written notes\n" in path.read_text()
    assert path.read_text().count("a-report:begin") == 1


def test_measure_interleaves_and_reports_median_with_percentiles():
    calls = []
    times = harness.measure({"x": lambda: calls.append("x"), "y": lambda: calls.append("y")}, 4)
    assert calls[:2] == ["x", "y"] and calls[2:] == ["x", "y", "y", "x", "x", "y", "y", "x"]  # warm-up, rotating
    assert {k: len(v) for k, v in times.items()} == {"x": 4, "y": 4}
    calls.clear()
    times = harness.measure({"x": lambda: calls.append("x")}, 3, warmup=False)
    assert calls == ["x"] * 3 and len(times["x"]) == 3
    with pytest.raises(ValueError, match="budget"):
        harness.measure({"x": lambda: None}, 3, budget_s=1.0, warmup=False)
    t = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert harness.stats_ms(t) == pytest.approx((3000.0, 1800.0, 4200.0))
    assert harness.fmt_s(t) == "3.00 [1.80–4.20]"


def test_timing_is_the_median_and_prints_its_spread():
    t = harness.Timing([1.0, 2.0, 3.0, 4.0, 5.0])
    assert t == 3.0 and isinstance(t / harness.Timing([1.5]), float) and t / harness.Timing([1.5]) == 2.0
    assert f"{t:.2f} s" == "3.00 [1.80–4.20] s"
