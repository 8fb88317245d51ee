#!/usr/bin/env bash
# The product end to end on CPU: synthetic corpus -> MDS shards -> DeepSpeed ZeRO-2 on 2 CPU ranks ->
# checkpoint -> held-out retrieval table and a PNG of the loss curves (runs/demo/metrics.png).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
OUT=${OUT:-runs/demo}
if [ ! -f data/demo/train/index.json ]; then
  .venv/bin/python -m dataprep synth data/demo --train 2000 --eval 200
fi
# One thread per rank: with the default, small ops on this 2-core machine run 50-100x slower.
OMP_NUM_THREADS=1 .venv/bin/deepspeed --num_gpus 2 trainer/main.py --config demo \
  output_dir="$OUT" data.train=data/demo/train data.eval=data/demo/eval "$@"
.venv/bin/python -m trainer.report "$OUT"
