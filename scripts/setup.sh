#!/usr/bin/env bash
# Creates .venv (if missing), installs torch 2.13.0 (CPU), the package's dependencies and those of
# the given extras (from pyproject.toml), and (re)builds prism_kernels._C when its sources changed.
# Usage: bash scripts/setup.sh [extras]      e.g. bash scripts/setup.sh test   or   demo,bench
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
venv="${PRISM_VENV:-.venv}"
pip_quiet=(-q --disable-pip-version-check)

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv with $($python --version)"
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"

# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
if [ ! -f "$venv/.prism_base" ]; then
  echo "setup: installing build tools and torch 2.13.0 (CPU)"
  "$py" -m pip install "${pip_quiet[@]}" --upgrade pip
  "$py" -m pip install "${pip_quiet[@]}" setuptools wheel ninja pybind11 "torch==2.13.0"
  touch "$venv/.prism_base"
fi

# Dependencies of the package and of each requested extra, read from pyproject.toml.
for extra in "" ${extras//,/ }; do
  stamp="$venv/.prism_deps_${extra:-core}"
  [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && continue
  mapfile -t reqs < <("$py" - "$extra" <<'PY'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extra = sys.argv[1]
for req in (project["optional-dependencies"][extra] if extra else project["dependencies"]):
    print(req)
PY
)
  echo "setup: installing ${extra:-core} dependencies: ${reqs[*]}"
  "$py" -m pip install "${pip_quiet[@]}" "${reqs[@]}"
  touch "$stamp"
done

# Build only when a source of the compiled library (or the build script) changed.
src_hash=$(cat setup.py pyproject.toml $(find csrc python -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' \) | sort) | sha256sum | cut -c1-16)
if [ "$src_hash" != "$(cat "$venv/.prism_build_hash" 2>/dev/null || true)" ] || ! "$py" -c "import prism_kernels._C" 2>/dev/null; then
  echo "setup: building prism_kernels._C (C++ extension, about 2 minutes on 2 cores)"
  MAX_JOBS="${MAX_JOBS:-2}" "$py" -m pip install "${pip_quiet[@]}" --no-build-isolation --no-deps -e .
  echo "$src_hash" > "$venv/.prism_build_hash"
fi
"$py" -c "import prism_kernels as pk; print('setup: prism_kernels', pk.__version__, 'backends:', ', '.join(pk.backends()))"
