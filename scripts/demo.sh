#!/usr/bin/env bash
# One command on a fresh machine (offline once the wheels are installed): sets up .venv and builds the
# package (scripts/setup.sh demo), then runs the demo (python -m prism_kernels.demo):
#   part 1 - prism score on four equal-size subsets of generated word problems drawn from 1, 4, 16 and 64
#            templates, with the proxy LM shipped in the package; prints the four G-Vendi values (they must
#            rise strictly: a check line says so) and writes demo_out/runs/*/ and demo_out/ladder.png;
#   part 2 - grid density of 200,000 synthetic 2-D points -> demo_out/grid/density.png.
# Options go to the demo: --out DIR, --rows N (per subset, default 64), --seed N, --skip-grid.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "${PRISM_VENV:-.venv}/bin/python" -m prism_kernels.demo "$@"
