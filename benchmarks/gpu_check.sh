#!/usr/bin/env bash
# On a machine with a CUDA GPU (under 5 minutes): no hidden host syncs on unsampled
# steps, then the overhead table on CUDA for the PyTorch rows.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
"$PY" -m benchmarks.gpu_sync
"$PY" -m benchmarks.overhead --device cuda --frameworks pytorch --models mlp cnn lstm --repeats 5 --steps 100
