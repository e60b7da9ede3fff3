#!/bin/bash
# 8 turns; in each, both models, SING and AdamW, order alternating per turn.
cd "$(dirname "$0")/../../.."
for t in 1 2 3 4 5 6 7 8; do
  for m in transformer resnet50; do
    if [ $((t % 2)) -eq 1 ]; then order="sing adamw"; else order="adamw sing"; fi
    for o in $order; do
      LABEL=turn$t KERAS_BACKEND=jax ${PYTHON:-python} docs/results/first_step/first_step_split.py $m $o 2>/dev/null | tail -1
    done
  done
done
