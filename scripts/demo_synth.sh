#!/usr/bin/env bash
# The offline demos of the synthesis loops, on the package's tiny models (prism_kernels/demo/synth.py):
#   prism synth prismatic --demo   3 rounds on a skewed demo pool -> demo_out/synth-prismatic/ (exit 1 when the
#                                  grown pool does not beat accepting as many candidates at random)
#   prism synth embedsdg --demo    16 examples in the sparsest windows of a 2-D PCA map -> demo_out/synth-embedsdg/
# Usage: bash scripts/demo_synth.sh [prismatic|embedsdg] [options for that loop]   (default: both, no options)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh synth
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
prism="${PRISM_VENV:-.venv}/bin/prism"
if [ $# -gt 0 ]; then
  loop="$1"; shift
  exec "$prism" synth "$loop" --demo "$@"
fi
"$prism" synth prismatic --demo
"$prism" synth embedsdg --demo
