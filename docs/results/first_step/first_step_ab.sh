#!/bin/bash
# A/B turns of the first fit step on JAX: CONFIGS is a list of "optimizer:code"
# (optimizer: adamw, sing, sing_ignore as in benchmarks/first_step.py; code: a
# keras_sing checkout, e.g. a `git worktree` of the base commit); each turn runs
# every config once, each in a fresh process, the order rotating from turn to turn.
#   CONFIGS="adamw:/tmp/base sing:/tmp/base sing:/tmp/new" TURNS=6 bash docs/results/first_step/first_step_ab.sh > ab.jsonl
cd "$(dirname "$0")/../../.."
read -r -a configs <<< "${CONFIGS:?set CONFIGS}"
n=${#configs[@]}
for t in $(seq "${TURNS:-4}"); do
  for i in $(seq 0 $((n - 1))); do
    c=${configs[$(((i + t) % n))]}
    LABEL="turn$t ${c#*:}" CODE=${c#*:} KERAS_BACKEND=jax ${PYTHON:-python} \
      docs/results/first_step/first_step_split.py "${MODEL:-transformer}" "${c%%:*}" 2>/dev/null | tail -1
  done
done
