#!/usr/bin/env bash
# Sets up (if needed) and runs the main job on built-in demo data: grid density of a 2-D point set,
# its sparse windows and seed pairs -> a printed summary and demo_out/density.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
exec "${PRISM_VENV:-.venv}/bin/python" -m prism_kernels.demo "$@"
