#!/usr/bin/env bash
# GPU check (issue 11, item 7): training images/s in fp32 and bf16 autocast, one TAS search epoch,
# and torch CUDA / CUDA-graph latency of a baseline and a compressed model, on synthetic data.
# Needs CUDA PyTorch and torchvision (no TensorRT, no network). Took 43 s on an H100
# (2026-11-26, figures in docs/BENCHMARKS.md); stopped after 7m50s whatever happens. Extra arguments go to benchmarks/gpu_check.py (e.g. --smoke).
#
#   bash benchmarks/gpu_check.sh 2>&1 | tee gpu_check.txt
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi: not available"
exec timeout 470 "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
