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
  .venv/bin/python -m pip install --quiet -e ".[${extras}]"
  touch "$stamp"
fi
