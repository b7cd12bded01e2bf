#!/usr/bin/env bash
# One command: install (first time) and run the app with its embedded defaults.
# Then open http://127.0.0.1:8000/ (REST docs at /docs). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh piper,asr,llm,vad,voices
export RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1
exec .venv/bin/serve run "${1:-serve_config.yaml}"
