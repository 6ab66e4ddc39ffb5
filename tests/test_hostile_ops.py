"""Direct calls of every ``torch.ops.prism.*`` op with hostile arguments, in one subprocess: a crash
(segfault, SIGBUS, abort) fails this test and names the case instead of killing the test run.

Every case must either raise an error whose message says what was wrong, or (the few listed in
``MAY_SUCCEED``) return: out-of-range group ids are counted nowhere by contract, an empty batch is
valid, a broadcast or transposed ``x`` is read through its strides.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prism_kernels import _backends

HERE = Path(__file__).resolve().parent
MAY_SUCCEED = {
    "hist_group_id_huge", "hist_group_id_negative", "hist_group_id_equal_G", "cells_group_id_huge",
    "cells_group_id_negative", "hist_ppg_huge", "window_counts_empty", "gram_x_broadcast_rows",
    "gram_x_transposed", "gram_x_huge_f64", "grouped_x_int", "sketch_rows_empty",
}
# what the error of a case must mention (the argument at fault)
MUST_NAME = {
    "hist_edges_nan": "edges", "hist_edges_all_nan": "edges", "hist_edges_inf": "edges",
    "hist_edges_decreasing": "edges", "cells_edges_nan": "edges", "gram_weights_negative": "weights",
    "gram_weights_nan": "weights", "hist_bins_beyond_edges": "bins", "sketch_k_zero": "k",
    "grouped_order_out_of_range": "order", "rbf_v_short": "v",
}


@pytest.mark.skipif(_backends.compiled() is None, reason="prism_kernels._C not built")
def test_hostile_direct_op_calls_never_crash():
    sys.path.insert(0, str(HERE))
    import _hostile_ops_script as script

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(HERE / "_hostile_ops_script.py")], capture_output=True, text=True,
                          timeout=300, env=env)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    started = [r["case"] for r in lines if r["outcome"] == "start"]
    ended = {r["case"]: r for r in lines if r["outcome"] != "start"}
    crashed = [c for c in started if c not in ended]
    assert proc.returncode == 0 and not crashed, \
        f"case {crashed[:1]} killed the process (return code {proc.returncode}): {proc.stderr[-2000:]}"
    assert set(ended) == set(script.CASES)
    for name, result in ended.items():
        if name in MAY_SUCCEED:
            continue
        assert result["outcome"] == "error", f"{name}: hostile arguments were accepted"
        assert result["message"], f"{name}: {result['type']} without a message"
        if name in MUST_NAME:
            assert MUST_NAME[name] in result["message"], f"{name}: {result['message']!r}"
