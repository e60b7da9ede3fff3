#!/usr/bin/env bash
# Release check: builds the sdist and the wheel, runs `twine check`, checks
# what they contain, installs the BUILT WHEEL (not the checkout) with the
# JAX CPU backend into a fresh virtual environment, and trains a small
# model with SING from a directory outside the repository, so that the
# checkout cannot be imported. Fails on any error.
#
#   bash scripts/check_wheel.sh
#
# The build tools live in $RELEASE_VENV (default .release-venv); the
# install test's environment is created fresh each run, in a temporary
# directory that is removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
VENV=${RELEASE_VENV:-.release-venv}
start=$SECONDS

quiet() {  # runs "$@", printing its output only if it fails
  local log
  log=$(mktemp)
  if ! "$@" >"$log" 2>&1; then
    cat "$log"; rm -f "$log"; echo "!!! failed: $*"; return 1
  fi
  rm -f "$log"
}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
quiet "$VENV/bin/python" -m pip install -q --upgrade pip build "twine>=6"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== python -m build (sdist and wheel)"
quiet "$VENV/bin/python" -m build --outdir "$work/dist" "$ROOT"
ls -l "$work/dist"

echo "== twine check --strict"
"$VENV/bin/python" -m twine check --strict "$work"/dist/*

echo "== contents"
"$VENV/bin/python" - "$work/dist" <<'PY'
import pathlib, sys, tarfile, zipfile

dist = pathlib.Path(sys.argv[1])
wheel = next(dist.glob("*.whl"))
sdist = next(dist.glob("*.tar.gz"))
names = zipfile.ZipFile(wheel).namelist()
metadata = zipfile.ZipFile(wheel).read(
    next(n for n in names if n.endswith(".dist-info/METADATA"))
).decode()
problems = []
for needed in ("keras_sing/__init__.py", "keras_sing/sing.py",
               "keras_sing/datasets/rde.py", "keras_sing/backend/torch.py"):
    if needed not in names:
        problems.append(f"wheel lacks {needed}")
if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
    problems.append("wheel lacks its LICENSE")
if any(n.startswith(("tests/", "docs/", "examples/")) for n in names):
    problems.append("wheel ships tests, docs or examples")
for field in ("License-Expression: Apache-2.0", "Requires-Dist: keras>=3.8",
              "Provides-Extra: jax", "Provides-Extra: docs"):
    if field not in metadata:
        problems.append(f"wheel METADATA lacks '{field}'")
members = [m.split("/", 1)[-1] for m in tarfile.open(sdist).getnames()]
for needed in ("LICENSE", "README.md", "CHANGELOG.md", "CITATION.cff",
               "pyproject.toml", "mkdocs.yml", "keras_sing/sing.py"):
    if needed not in members:
        problems.append(f"sdist lacks {needed}")
if problems:
    sys.exit("\n".join(problems))
print(f"{wheel.name}: {len(names)} files; {sdist.name}: {len(members)} entries")
PY

echo "== install the wheel into a fresh environment (jax[cpu])"
"$PYTHON" -m venv "$work/venv"
quiet "$work/venv/bin/python" -m pip install -q "$(ls "$work"/dist/*.whl)[jax]"

echo "== train with SING from the installed wheel"
mkdir "$work/run"
cd "$work/run"
KERAS_BACKEND=jax JAX_PLATFORMS=cpu KERAS_SING_CHECKOUT="$ROOT" \
  "$work/venv/bin/python" - <<'PY'
import os

import numpy as np

import keras
import keras_sing

checkout = os.path.realpath(os.environ["KERAS_SING_CHECKOUT"])
where = os.path.realpath(keras_sing.__file__)
assert not where.startswith(checkout + os.sep), f"imported the checkout: {where}"
assert keras.backend.backend() == "jax", keras.backend.backend()

keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
y = (x[:, :1] - x[:, 1:2]).astype("float32")
model = keras.Sequential(
    [keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
)
opt = keras_sing.SING(keras.optimizers.AdamW(1e-2))
model.compile(optimizer=opt, loss="mse")
first = model.evaluate(x, y, verbose=0)
history = model.fit(x, y, batch_size=16, epochs=5, verbose=0)
last = model.evaluate(x, y, verbose=0)
assert np.isfinite(last), last
assert last < first, (first, last)
assert int(opt.iterations) == 20, int(opt.iterations)
assert int(opt.skipped_steps) == 0
print(f"keras_sing {keras_sing.__version__} from {where}")
print(f"SING(AdamW) on jax: 20 steps, loss {first:.4f} -> {last:.4f}")
PY
cd "$ROOT"
echo "== wheel OK in $((SECONDS - start)) s"
