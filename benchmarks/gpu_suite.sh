#!/usr/bin/env bash
# The GPU suite (benchmarks/gpu_suite.py has the details): on one H100/H200, within 8 minutes, one JSON with the
# 2B DiT forward (XLA vs cuDNN attention), the ALOHA action query with and without future-image decode, N=8
# planning, the 2B train step at the largest batch that fits (MFU), and the 41x224x224 VAE encode.
#
#   benchmarks/gpu_suite.sh [--out benchmarks/results/gpu_suite.json]   # on a GPU machine
#   benchmarks/gpu_suite.sh --dry-run                                    # same code at tiny shapes, CPU, ~1 min
#
# PYTHON picks the interpreter (default: python on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do
  if [[ "$arg" == "--dry-run" ]]; then
    export JAX_PLATFORMS=cpu
  fi
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" benchmarks/gpu_suite.py "$@"
