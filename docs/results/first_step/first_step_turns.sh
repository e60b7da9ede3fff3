#!/bin/bash
# TURNS turns (default 8); in each, every model of MODELS (default both), SING and
# AdamW, each in a fresh process, the order alternating from turn to turn.
#   TURNS=16 MODELS=transformer bash docs/results/first_step/first_step_turns.sh > turns.jsonl
cd "$(dirname "$0")/../../.."
for t in $(seq "${TURNS:-8}"); do
  for m in ${MODELS:-transformer resnet50}; do
    if [ $((t % 2)) -eq 1 ]; then order="sing adamw"; else order="adamw sing"; fi
    for o in $order; do
      LABEL=turn$t KERAS_BACKEND=jax ${PYTHON:-python} docs/results/first_step/first_step_split.py $m $o 2>/dev/null | tail -1
    done
  done
done
