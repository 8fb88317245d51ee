#!/usr/bin/env bash
# Sets up .venv (torch + torchvision first, then the project with its test extras) and runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh test
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec .venv/bin/python -m pytest -q "$@"
