#!/usr/bin/env bash
# Builds the documentation site into site/ and checks it; fails on any
# problem. Usage:
#
#   bash scripts/build_docs.sh            # build and check
#   bash scripts/build_docs.sh --serve    # build and check, then serve on
#                                         # http://127.0.0.1:8000 (live reload)
#
# 1. a virtual environment ($DOCS_VENV, default .docs-venv) with
#    keras_sing[docs,jax] (installed again only when pyproject.toml changes);
# 2. `mkdocs build --strict`: a broken link or anchor, a page missing from
#    the navigation, an unresolvable API name or a docstring warning fails;
# 3. the docstring examples as doctests, on the JAX backend;
# 4. scripts/check_api_docs.py: every public name is in the API reference,
#    on the docstring template.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${DOCS_VENV:-.docs-venv}
export KERAS_BACKEND=jax JAX_PLATFORMS=cpu NO_MKDOCS_2_WARNING=1 TF_CPP_MIN_LOG_LEVEL=3

serve=0
for arg in "$@"; do
  case "$arg" in
    --serve) serve=1 ;;
    *) echo "usage: bash scripts/build_docs.sh [--serve]" >&2; exit 2 ;;
  esac
done

start=$SECONDS
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.keras_sing-docs-installed"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== installing keras_sing[docs,jax] into $VENV"
  log=$(mktemp)
  if ! { "$PY" -m pip install -q --upgrade pip && "$PY" -m pip install -q -e ".[docs,jax]"; } >"$log" 2>&1; then
    cat "$log"; rm -f "$log"; exit 1
  fi
  rm -f "$log"
  echo "$want" >"$stamp"
fi

echo "== mkdocs build --strict"
log=$(mktemp)
if ! "$PY" -m mkdocs build --strict --clean >"$log" 2>&1; then
  cat "$log"; rm -f "$log"; echo "!!! mkdocs build --strict failed"; exit 1
fi
grep -v "^INFO" "$log" || true
rm -f "$log"

echo "== doctests (KERAS_BACKEND=$KERAS_BACKEND)"
"$PY" -m pytest -q -p no:cacheprovider --doctest-modules keras_sing \
  --ignore=keras_sing/backend/tensorflow.py --ignore=keras_sing/backend/torch.py \
  -o doctest_optionflags="NORMALIZE_WHITESPACE ELLIPSIS NUMBER" \
  -W "ignore:Explicitly requested dtype" -o addopts=""

echo "== API reference coverage"
"$PY" scripts/check_api_docs.py --site site

echo "== docs OK: site/ built and checked in $((SECONDS - start)) s"
if [ "$serve" = 1 ]; then
  exec "$PY" -m mkdocs serve -a 127.0.0.1:8000
fi
