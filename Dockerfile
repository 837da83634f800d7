# syntax=docker/dockerfile:1
# The mtgrpo trainer image: SageMaker runs it as `docker run IMAGE train` (see docs/image.md).
#
# Base: NVIDIA's CUDA 13 development image on Ubuntu 24.04 (Python 3.12, glibc 2.39). The
# torch 2.13 and vLLM 0.31 wheels from PyPI bring their own CUDA 13 libraries; the toolkit
# (nvcc) is there for DeepSpeed's JIT-compiled ops and an optional flash-attn build. The host
# driver must support CUDA 13 (R580 or newer). Build with docker/build_and_push.sh.
ARG BASE_IMAGE=nvidia/cuda:13.0.1-devel-ubuntu24.04
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# The job runs with network isolation (the recipes' default): weights, data and corpus come
# from channels, rollouts go to vLLM on localhost. So nothing may try the network: no hub
# downloads or lookups, no usage reports, no telemetry (each would time out or fail).
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HF_HUB_DISABLE_IMPLICIT_TOKEN=1 \
    VLLM_NO_USAGE_STATS=1 \
    VLLM_DO_NOT_TRACK=1 \
    DO_NOT_TRACK=1 \
    WANDB_MODE=disabled \
    WANDB_DISABLED=true

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
       build-essential git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# Every Python package is pinned in the lock (docker/requirements-gpu.lock). DeepSpeed is an
# sdist whose build imports torch, so it goes last, without build isolation and without
# pre-built ops (they are JIT-compiled on first use).
COPY docker/requirements-gpu.lock /tmp/requirements-gpu.lock
RUN grep -v '^deepspeed==' /tmp/requirements-gpu.lock > /tmp/wheels.lock \
    && pip install --only-binary=:all: -r /tmp/wheels.lock \
    && DS_BUILD_OPS=0 pip install --no-deps --no-build-isolation \
       "$(grep '^deepspeed==' /tmp/requirements-gpu.lock)" \
    && rm /tmp/wheels.lock

# Optional flash-attention (a long source build): --build-arg FLASH_ATTN=2.8.3
ARG FLASH_ATTN=""
RUN if [ -n "$FLASH_ATTN" ]; then \
        MAX_JOBS=8 pip install --no-build-isolation "flash-attn==${FLASH_ATTN}"; \
    fi

WORKDIR /opt/mtgrpo
COPY pyproject.toml README.md ./
# mtgrpo/render/templates links to ../../templates: the wheel build copies them in.
COPY templates ./templates
COPY mtgrpo ./mtgrpo
RUN pip install --no-deps . \
    && pip check \
    && python -c "import mtgrpo.sagemaker.launcher, mtgrpo.sagemaker.worker, vllm, deepspeed, trl"

# Exec form: SageMaker's `train` argument arrives as argv[1] of the module.
ENTRYPOINT ["python", "-m", "mtgrpo.sagemaker"]
