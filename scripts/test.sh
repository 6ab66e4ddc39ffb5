#!/usr/bin/env bash
# Sets up (if needed) and runs the test suite. The Triton kernels run under TRITON_INTERPRET=1 on
# CPU tensors; CUDA-only tests skip cleanly on a machine without a GPU. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export TRITON_INTERPRET="${TRITON_INTERPRET:-1}"
exec "${PRISM_VENV:-.venv}/bin/python" -m pytest tests -q "$@"
