#!/usr/bin/env bash
# Downloads into .whl/ what the GPU machine lacks (it has no internet) for benchmarks/gpu_check.sh:
# pydantic and its needs, DeepSpeed (a pure-Python wheel built from its sdist) and hjson,
# mosaicml-streaming and the compression modules it imports, and the bert-base-uncased vocabulary.
# Versions are the ones the CPU environment tests with (zstd: the nearest unyanked cp312 wheel). Run here, from the repository root:
#   bash benchmarks/fetch_gpu_wheels.sh        (about 11 MB; .whl/ is git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$DEST"

cp312() {  # binary wheels for the GPU machine's CPython 3.12 on x86-64 Linux
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "$@"
}

cp312 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0
cp312 hjson==3.1.0
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" deepspeed==0.19.8
cp312 mosaicml-streaming==0.13.0 brotli==1.2.1 catalogue==2.0.10 python-snappy==0.7.3 cramjam==2.14.0 zstd==1.5.6.2

# The tokenizer for --loader: a bare vocab.txt (model.text.tokenizer accepts one), from the package
# that ships it offline here.
"$PY" -c 'from trainer.data.tokenizer import bundled_vocab; print(bundled_vocab())' | xargs -I{} cp {} "$DEST/bert-base-uncased-vocab.txt"

ls -la "$DEST"
du -sh "$DEST"
