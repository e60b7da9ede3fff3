#!/usr/bin/env bash
# Sets up ./.venv, then trains a small KerasHub ViT on RDE-like depth data with
# AdamW (lr 1e-3) and with SING (lr 1e-2) on the same data and seed, and prints
# the comparison table (JAX backend, about 3 minutes on a laptop CPU).
# Writes runs/vit_depth_rde/metrics.json and curves.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
VENV=${VENV:-.venv}
KERAS_BACKEND=${KERAS_BACKEND:-jax} "$VENV/bin/python" examples/vit_depth_rde.py --compare --verbose 2 "$@"
