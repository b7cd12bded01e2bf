#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): on a machine with one NVIDIA GPU, at most ~8 minutes,
# it runs the neural engines' tests on CUDA, bench/lipsync.py for Wav2Lip 96/256 and MuseTalk,
# Piper on CUDA and the per-session CPU cost, and writes a Markdown section for BENCHMARKS.md.
#   bash bench/gpu_check.sh [--out FILE]
#   bash bench/gpu_check.sh --dry [--out FILE]   # on the CPU at toy sizes: CI runs this
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
exec "${PYTHON:-.venv/bin/python}" -m bench.gpu_check "$@"
