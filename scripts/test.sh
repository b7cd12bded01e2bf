#!/usr/bin/env bash
# One command: install (first time) and run the whole test suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh piper,test
if ! command -v chromium >/dev/null 2>&1; then
  # Browser tests drive Debian's headless Chromium.
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
export RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1
set +e
.venv/bin/python -m pytest -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit "$status"
