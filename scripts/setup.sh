#!/usr/bin/env bash
# Creates .venv (Python 3.11+) and installs the project with the given extras; idempotent.
#   bash scripts/setup.sh piper,test
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-piper}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  if [[ ",$extras," == *",neural,"* ]] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
    # The plain `torch` wheel drags in several GB of CUDA libraries; TORCH_SPEC overrides.
    .venv/bin/python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
  fi
  .venv/bin/python -m pip install --quiet -e ".[${extras}]"
  # Only for its face-mesh model files (Apache-2.0): never imported, so its pins do not apply.
  .venv/bin/python -m pip install --quiet --no-deps "mediapipe==0.10.21"
  touch "$stamp"
fi
