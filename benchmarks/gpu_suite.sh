#!/usr/bin/env bash
# The GPU suite of issue 11: correctness on CUDA, optimizer step, whole train
# step and peak memory, SING against its host, on JAX and torch.
#
#   bash benchmarks/gpu_suite.sh --out "$OUT"                        # everything (> 10 min: split it, see below)
#   bash benchmarks/gpu_suite.sh --out "$OUT" --backend jax --only tests,memory
#   bash benchmarks/gpu_suite.sh --out "$OUT" --backend torch --only optimizer --param-sets vit_b16
#   bash benchmarks/gpu_suite.sh --out /tmp/dry --dry-run --skip-tests   # CPU, CI-sized, current environment
#
# Options of its own: --out DIR (required), --backend jax|torch (repeatable or
# comma-separated; default both), --dry-run. Every other option goes to
# benchmarks/gpu_suite.py (--only, --skip-tests, --param-sets, --dtypes,
# --hosts, --models, --memory, --reps, --train-reps, ...; see its --help).
#
# Unless --dry-run: if Keras, KerasHub or pytest cannot be imported, installs
# them from the wheels in .gpu-wheels/ (benchmarks/README.md says how that
# folder is filled) into $GPU_SITE (default /tmp/keras_sing_gpu_site), with
# no registry. Python: $PYTHON, else python3. Writes DIR/<backend>.json,
# .md and .log. Exit status: non-zero if a backend's run failed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=""
DRY=0
BACKENDS=()
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --out=*) OUT=${1#--out=}; shift ;;
    --backend) BACKENDS+=(${2//,/ }); shift 2 ;;
    --backend=*) v=${1#--backend=}; BACKENDS+=(${v//,/ }); shift ;;
    --dry-run) DRY=1; PASS+=("$1"); shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) PASS+=("$1"); shift ;;
  esac
done
[ -n "$OUT" ] || { echo "gpu_suite.sh: --out DIR is required" >&2; exit 2; }
[ ${#BACKENDS[@]} -gt 0 ] || BACKENDS=(jax torch)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
# JAX would take 75% of the GPU in each process; the suite runs pytest and
# the memory probes as child processes beside the measuring one.
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export GPU_SUITE_COMMAND="bash benchmarks/gpu_suite.sh --out <out> ${BACKENDS[*]/#/--backend } ${PASS[*]:-}"

if [ "$DRY" = 0 ]; then
  SITE=${GPU_SITE:-/tmp/keras_sing_gpu_site}
  export PYTHONPATH="$PYTHONPATH:$SITE"
  echo "[gpu_suite.sh] $(date +%T) checking Keras, KerasHub and pytest (wheels: .gpu-wheels, target: $SITE)"
  "$PY" benchmarks/gpu_install.py --wheels .gpu-wheels --target "$SITE" || exit 3
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi

status=0
for b in "${BACKENDS[@]}"; do
  echo "[gpu_suite.sh] $(date +%T) === $b"
  KERAS_BACKEND=$b "$PY" -u benchmarks/gpu_suite.py --backend "$b" --out "$OUT" "${PASS[@]}" 2>&1 | tee -a "$OUT/$b.log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then echo "[gpu_suite.sh] !!! $b: exited with $rc"; status=1; fi
done
echo "[gpu_suite.sh] $(date +%T) done (status $status); files in $OUT:"; ls -l "$OUT"
exit $status
