#!/usr/bin/env bash
# Creates .venv (if missing), installs torch 2.13.0 (CPU) and the package with the given extras,
# and (re)builds prism_kernels._C when its sources changed. Usage: bash scripts/setup.sh [extras]
#   e.g. bash scripts/setup.sh test      bash scripts/setup.sh demo,bench
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
venv="${PRISM_VENV:-.venv}"

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv with $($python --version)"
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"
pip_quiet=(-q --disable-pip-version-check)
stamp="$venv/.prism_setup_$(echo "$extras" | tr ',' '_')"
# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
if [ ! -f "$stamp" ]; then
  echo "setup: installing build tools, torch 2.13.0 and dependencies${extras:+ ($extras)}"
  "$py" -m pip install "${pip_quiet[@]}" --upgrade pip
  "$py" -m pip install "${pip_quiet[@]}" setuptools wheel ninja pybind11 "torch==2.13.0" numpy
fi

# Rebuild only when a source of the compiled library (or the build script) changed.
src_hash=$(cat setup.py pyproject.toml $(find csrc python -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' \) | sort) | sha256sum | cut -c1-16)
built_hash=$(cat "$venv/.prism_build_hash" 2>/dev/null || true)
if [ ! -f "$stamp" ] || [ "$src_hash" != "$built_hash" ] || ! "$py" -c "import prism_kernels._C" 2>/dev/null; then
  echo "setup: building prism_kernels (C++ extension, about 2 minutes on 2 cores)"
  MAX_JOBS="${MAX_JOBS:-2}" "$py" -m pip install "${pip_quiet[@]}" --no-build-isolation -e ".${extras:+[$extras]}"
  echo "$src_hash" > "$venv/.prism_build_hash"
  touch "$stamp"
fi
"$py" -c "import prism_kernels as pk; print('setup: prism_kernels', pk.__version__, 'backends:', ', '.join(pk.backends()))"
