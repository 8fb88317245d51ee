#!/usr/bin/env bash
# The one prepared script for a lent GPU window (fresh machine, no internet, ~15 min of device time in all).
# Prepare here once:  bash benchmarks/fetch_gpu_wheels.sh          (fills .whl/, git-ignored)
# On the device:      run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
# Steps, each under its own time limit, later ones skipped when the budget runs short:
#   1. install the carried wheels into /tmp/site   2. kernel parity tests on the GPU (values + gradients)
#   3. kernel micro-benchmarks (fused vs reference at the paper sizes)
#   4. training throughput, paper config, synthetic inputs on the GPU: eager vs fused
#   5. the data path alone: a synthetic MDS corpus of JPEGs through the real loader, 16 workers
#   6. (GPU_CHECK_LOADER_TRAIN=1) training through the real loader
# Full logs and JSON go to $OUT; the compact table (summary.md) is printed last. Exit status 1 when a step
# failed, timed out or was skipped.
# Without a GPU it runs as a dry run at toy sizes (no install), to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
BUDGET=${GPU_CHECK_BUDGET:-540}  # seconds for the whole script: keep a rerun possible in the window
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST="9.0" TOKENIZERS_PARALLELISM=false
: > "$LOG"
log() { echo "[gpu_check +${SECONDS}s] $*" | tee -a "$LOG"; }

# run_step NAME LIMIT CMD...: runs CMD under min(LIMIT, what is left of BUDGET), logs it, keeps its status
declare -A STATUS
run_step() {
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - SECONDS - 15))
  if (( left < 20 )); then STATUS[$name]="skipped (budget)"; log "$name: skipped, ${left}s left"; return; fi
  (( limit > left )) && limit=$left
  log "$name: start (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  case $rc in 0) STATUS[$name]=ok ;; 124|137) STATUS[$name]="timed out after ${limit}s" ;; *) STATUS[$name]="failed (exit $rc)" ;; esac
  log "$name: ${STATUS[$name]}"
}


if nvidia-smi >/dev/null 2>&1; then
  DRY=0; PY=python3
  log "install: carried wheels -> /tmp/site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    2>&1 | tee -a "$LOG" || { log "install failed"; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD"
  CONFIG=pretrain_4m; KSIZE=paper; STEPS=30; WARMUP=10; SYNTH_N=1500; SYNTH_PX=384; WORKERS=16
  VOCAB="$PWD/.whl/bert-base-uncased-vocab.txt"
else
  DRY=1; PY=${PYTHON:-.venv/bin/python}
  log "no GPU: dry run at toy sizes"
  export OMP_NUM_THREADS=1
  CONFIG=tiny; KSIZE=small; STEPS=2; WARMUP=1; SYNTH_N=40; SYNTH_PX=96; WORKERS=1
  VOCAB=bert-base-uncased
fi

{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>/dev/null || echo "gpu: none"
  echo "cpus: $(nproc --all)"
  "$PY" -c 'import sys, torch, triton; print("python", sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__)'
} > "$OUT/env.txt" 2>&1
tee -a "$LOG" < "$OUT/env.txt"

run_step parity 150 "$PY" -m pytest -q -p no:cacheprovider --junitxml="$OUT/parity.xml" \
  tests/trainer/kernels tests/trainer/test_flops.py
run_step kernels 90 "$PY" -m benchmarks.kernel_bench --size "$KSIZE" --json "$OUT/kernels.json"
run_step train 210 "$PY" -m benchmarks.train_throughput --config "$CONFIG" --steps "$STEPS" --warmup "$WARMUP" \
  --variants eager,fused --json "$OUT/train.json"

DATA=/tmp/tcl-bench-corpus
DATA_ARGS=(data.train="$DATA/train" data.num_workers="$WORKERS" data.cache_dir=/tmp/tcl-bench-cache model.text.tokenizer="$VOCAB")
rm -rf "$DATA" /tmp/tcl-bench-cache
run_step corpus 45 "$PY" -m dataprep synth "$DATA" --train "$SYNTH_N" --eval 8 --size "$SYNTH_PX"
if [[ ${STATUS[corpus]} == ok ]]; then
  run_step loader 45 "$PY" -m benchmarks.train_throughput --config "$CONFIG" --loader-only --steps $((DRY ? 3 : 20)) \
    --warmup 2 --json "$OUT/loader.json" "${DATA_ARGS[@]}"
  if [[ ${GPU_CHECK_LOADER_TRAIN:-0} == 1 ]]; then
    run_step loader_train 120 "$PY" -m benchmarks.train_throughput --config "$CONFIG" --loader --variants fused \
      --steps "$STEPS" --warmup "$WARMUP" --json "$OUT/loader_train.json" "${DATA_ARGS[@]}"
  fi
fi

STEP_STATUS=$(for k in "${!STATUS[@]}"; do echo "$k=${STATUS[$k]}"; done | sort | paste -sd';' -)
"$PY" -m benchmarks.gpu_summary "$OUT" --status "$STEP_STATUS" > "$OUT/summary.md" 2>>"$LOG"
cat "$OUT/summary.md"
# Only a run whose every step is ok exits 0: a failed, timed-out or skipped step must show in the exit
# status, not only in the summary.
failed=$(for k in "${!STATUS[@]}"; do [[ ${STATUS[$k]} == ok ]] || echo "$k"; done | sort | paste -sd' ' -)
if [[ -n $failed ]]; then
  log "done: FAILED steps: $failed"
  exit 1
fi
log "done: every step ok"
