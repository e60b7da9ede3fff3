#!/usr/bin/env bash
# Lints the package, tests, benchmarks, examples and scripts with ruff
# (the rules in pyproject.toml: pycodestyle, pyflakes, isort, bugbear,
# pyupgrade, NumPy; line length 80), in its own small environment
# ./.lint-venv. CI runs it before the tests. Outside the package long lines
# are allowed (pyproject.toml's per-file-ignores); the
# one-off measurement scripts under docs/results are records, not linted.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.lint-venv
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q "ruff==0.17.6"
"$VENV/bin/ruff" check keras_sing tests benchmarks examples scripts
