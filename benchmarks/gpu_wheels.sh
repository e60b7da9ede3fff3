#!/usr/bin/env bash
# Fills the git-ignored .gpu-wheels/ with what benchmarks/gpu_suite.sh
# installs on the GPU machine (Python 3.12, no registry there). Run it here,
# where PyPI is reachable, before a GPU run; then carry .gpu-wheels along.
#
#   bash benchmarks/gpu_wheels.sh WHEELS_DIR   # a folder of cp312 wheels: Keras 3.15.1,
#                                              # KerasHub 0.32.0 and their dependencies
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:?usage: bash benchmarks/gpu_wheels.sh WHEELS_DIR (cp312 wheels of keras, keras-hub and their dependencies)}
PY=${PYTHON:-python3}
mkdir -p .gpu-wheels
# Keras 3.15.1, KerasHub 0.32.0 and their dependencies for cp312.
cp "$SRC"/*.whl .gpu-wheels/
# pytest for the golden and core tests on CUDA (pygments, which it needs, is among the above).
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 -d .gpu-wheels pytest pluggy iniconfig packaging
# Check that every requirement of gpu_install.py has a cp312 wheel here.
rm -rf /tmp/gpu-wheels-check
"$PY" -m pip install -q --no-index --find-links .gpu-wheels --no-deps --target /tmp/gpu-wheels-check \
  --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  --only-binary=:all: $("$PY" -c "import sys; sys.path.insert(0, 'benchmarks'); import gpu_install; print(' '.join(r for _, r in gpu_install.NEEDED))")
rm -rf /tmp/gpu-wheels-check
du -sh .gpu-wheels
