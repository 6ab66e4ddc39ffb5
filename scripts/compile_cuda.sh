#!/usr/bin/env bash
# Compile-only check of the CUDA backend, for machines without a GPU or without a CUDA build of torch.
#
#   1. every csrc/cuda/*.cu through nvcc for sm_80 and sm_90, warnings as errors;
#   2. when torch's headers (with c10/cuda) are importable, a syntax check of the torch glue
#      (csrc/cuda/*.cpp) with PRISM_WITH_CUDA defined: a CPU-only torch never builds that code.
#
# Run from anywhere (it works from the repository root). Exits non-zero on the first failure, and 0
# with a message when nvcc is not on PATH. Environment: NVCC, CXX, PYTHON override the tools.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

NVCC="${NVCC:-nvcc}"
if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "compile_cuda: $NVCC not on PATH, skipping the CUDA compile check"
  exit 0
fi

shopt -s nullglob
cuda_sources=(csrc/cuda/*.cu)
glue_sources=(csrc/cuda/*.cpp)
shopt -u nullglob

work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT

nvcc_flags=(
  -std=c++17 -Icsrc/include
  -gencode arch=compute_80,code=sm_80
  -gencode arch=compute_90,code=sm_90
  -Werror all-warnings
  -Xcompiler -Wall,-Wextra,-Werror
)

echo "compile_cuda: $("$NVCC" --version | tail -n 1)"
for source in "${cuda_sources[@]}"; do
  "$NVCC" "${nvcc_flags[@]}" -c "$source" -o "$work_dir/$(basename "$source").o"
  echo "  ok    $source (sm_80, sm_90)"
done

# The torch glue: needs torch's include paths and the CUDA toolkit's headers.
glue_status="skipped"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
torch_includes="$("$PYTHON" -c 'from torch.utils.cpp_extension import include_paths
print("\n".join(include_paths()))' 2>/dev/null || true)"
cuda_home="${CUDA_HOME:-${CUDA_PATH:-}}"
if [[ -z "$cuda_home" ]]; then
  # nvcc may be a wrapper script, so ask it where it lives rather than resolving links.
  nvcc_bin="$("$NVCC" -v --dryrun -c -x cu /dev/null -o "$work_dir/probe.o" 2>&1 |
    sed -n 's/^#\$ _HERE_=//p' | head -n 1)"
  [[ -n "$nvcc_bin" ]] && cuda_home="$(cd "$nvcc_bin/.." && pwd)"
fi

if (( ${#glue_sources[@]} == 0 )); then
  glue_status="none found"
elif [[ -z "$torch_includes" ]]; then
  echo "  skip  torch glue: torch is not importable with $PYTHON"
elif [[ -z "$cuda_home" || ! -f "$cuda_home/include/cuda_runtime_api.h" ]]; then
  echo "  skip  torch glue: CUDA headers not found (set CUDA_HOME)"
else
  glue_flags=(-std=c++20 -fsyntax-only -Wall -Wextra -Werror -DPRISM_WITH_CUDA -Icsrc/include)
  have_c10_cuda=0
  while IFS= read -r include_dir; do
    [[ -n "$include_dir" ]] || continue
    glue_flags+=(-isystem "$include_dir")
    [[ -f "$include_dir/c10/cuda/CUDAGuard.h" ]] && have_c10_cuda=1
    # CPU wheels ship c10/cuda headers without the configured macros file they include.
    if [[ -f "$include_dir/c10/cuda/CUDAMacros.h" &&
          ! -f "$include_dir/c10/cuda/impl/cuda_cmake_macros.h" ]]; then
      glue_flags+=(-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE)
    fi
  done <<< "$torch_includes"
  glue_flags+=(-isystem "$cuda_home/include")
  if (( have_c10_cuda )); then
    for source in "${glue_sources[@]}"; do
      "${CXX:-c++}" "${glue_flags[@]}" "$source"
      echo "  ok    $source (syntax, PRISM_WITH_CUDA)"
    done
    glue_status="checked"
  else
    echo "  skip  torch glue: this torch has no c10/cuda headers"
  fi
fi

echo "compile_cuda: ${#cuda_sources[@]} CUDA source(s) compiled for sm_80 and sm_90; torch glue: $glue_status"
