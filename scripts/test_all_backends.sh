#!/usr/bin/env bash
# Sets up ./.venv and runs the whole test suite once per Keras backend.
# Fails if any test fails or if a backend ran no test.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh || exit 1
VENV=${VENV:-.venv}
export TF_CPP_MIN_LOG_LEVEL=3 TF_ENABLE_ONEDNN_OPTS=0
status=0
for backend in ${BACKENDS:-tensorflow jax torch}; do
  echo "=== KERAS_BACKEND=$backend"
  log=$(mktemp)
  KERAS_BACKEND=$backend "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "!!! $backend: pytest exited with $rc"; status=1
  elif ! grep -Eq "[0-9]+ passed" "$log"; then
    echo "!!! $backend: no test ran"; status=1
  fi
  rm -f "$log"
done
exit $status
