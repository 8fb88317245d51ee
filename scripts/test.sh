#!/usr/bin/env bash
# Sets up .venv (torch + torchvision first, then the project with its test extras) and runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# DeepSpeed JIT-builds its CPU shared-memory op into torch's extension cache; one cache per checkout, so that
# another checkout's venv never rebuilds the library under a running test (the likely cause of one rank abort
# seen while two checkouts ran tests on one machine).
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/.venv/torch_extensions}
exec .venv/bin/python -m pytest -q "$@"
