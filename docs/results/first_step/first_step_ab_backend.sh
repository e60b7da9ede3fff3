#!/bin/bash
# A/B turns of the first fit step (benchmarks/first_step.py --one) on any
# backend: CONFIGS is a list of "optimizer:code" (optimizer as first_step.py
# accepts, sing_no_lookahead included; code: a keras_sing checkout, e.g. a
# `git worktree` of the base commit); each turn runs every config once per
# model, each in a fresh process, the order rotating from turn to turn.
#   BACKEND=tensorflow MODELS="transformer resnet50" TURNS=4 \
#   CONFIGS="adamw:/tmp/new sing_no_lookahead:/tmp/old sing_no_lookahead:/tmp/new" \
#   bash docs/results/first_step/first_step_ab_backend.sh > ab.jsonl
cd "$(dirname "$0")/../../.."
read -r -a configs <<< "${CONFIGS:?set CONFIGS}"
n=${#configs[@]}
for t in $(seq "${TURNS:-4}"); do
  for model in ${MODELS:-transformer}; do
    for i in $(seq 0 $((n - 1))); do
      c=${configs[$(((i + t) % n))]}
      row=$(PYTHONPATH=${c#*:} KERAS_BACKEND=${BACKEND:?set BACKEND} TF_CPP_MIN_LOG_LEVEL=3 \
        ${PYTHON:-python} benchmarks/first_step.py --one "$model" "${c%%:*}" 2>/dev/null | tail -1)
      echo "{\"turn\": $t, \"code\": \"${c#*:}\", ${row#\{}"
    done
  done
done
