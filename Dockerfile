# syntax=docker/dockerfile:1
# The mtgrpo trainer image: SageMaker runs it as `docker run IMAGE train` (see docs/image.md).
#
# Base: NVIDIA's CUDA 13 development image on Ubuntu 24.04 (Python 3.12, glibc 2.39), pinned by
# digest: docker/base-image.txt holds `<image>:<tag>@sha256:<digest>` and
# docker/build_and_push.sh passes it as BASE_IMAGE (a build without it fails: no moving tags).
# The torch 2.13 and vLLM 0.31 wheels from PyPI bring their own CUDA 13 libraries; the toolkit
# (nvcc) stays for the kernels DeepSpeed, FlashInfer and Triton compile at first use. The host
# driver must support CUDA 13 (R580 or newer). Build with docker/build_and_push.sh.
#
# Stages: `build` has the compilers, headers, git and pip that installing needs; `trainer` (the
# last, default target) gets only the finished virtual environment and keeps no pip, git or
# make; its job runs as the non-root user 10001. `pipelines` is the image of the pipeline's
# steps (kfp), built with `--target pipelines`.
ARG BASE_IMAGE

FROM ${BASE_IMAGE} AS build

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
       build-essential git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

# Every Python package is pinned with its sha256 in the lock (docker/requirements-gpu.lock,
# written by docker/update_lock.py) and installed with --require-hashes: a file that differs
# from the one locked fails the build. DeepSpeed is an sdist whose build imports torch, so it
# goes last, without build isolation and without pre-built ops (JIT-compiled on first use).
COPY docker/requirements-gpu.lock /tmp/requirements-gpu.lock
RUN grep -v '^deepspeed==' /tmp/requirements-gpu.lock > /tmp/wheels.lock \
    && grep '^deepspeed==' /tmp/requirements-gpu.lock > /tmp/sdists.lock \
    && pip install --require-hashes --no-deps --only-binary=:all: -r /tmp/wheels.lock \
    && DS_BUILD_OPS=0 pip install --require-hashes --no-deps --no-build-isolation \
       -r /tmp/sdists.lock \
    && rm /tmp/wheels.lock /tmp/sdists.lock

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
RUN pip install --no-deps --no-build-isolation . \
    && pip check \
    && python -c "import mtgrpo.sagemaker.launcher, mtgrpo.sagemaker.worker, vllm, deepspeed, trl" \
    && pip uninstall -y pip



# The pipeline's steps (docs/operate.md): `docker build --target pipelines`. kfp and mtgrpo's
# light dependencies only (kfp's pins clash with the trainer's stack), its own hashed lock, no
# compilers, and the non-root user: the steps only talk to the Kubernetes API.
FROM ${BASE_IMAGE} AS pipelines

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/mtgrpo

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && groupadd --gid 10001 mtgrpo \
    && useradd --uid 10001 --gid 10001 --home-dir /home/mtgrpo --create-home \
       --shell /usr/sbin/nologin mtgrpo

COPY docker/requirements-pipelines.lock /tmp/requirements-pipelines.lock
COPY pyproject.toml README.md /tmp/mtgrpo-src/
COPY templates /tmp/mtgrpo-src/templates
COPY mtgrpo /tmp/mtgrpo-src/mtgrpo
RUN grep -v '^kfp-server-api==' /tmp/requirements-pipelines.lock > /tmp/wheels.lock \
    && grep '^kfp-server-api==' /tmp/requirements-pipelines.lock > /tmp/sdists.lock \
    && pip install --require-hashes --no-deps --only-binary=:all: -r /tmp/wheels.lock \
    && pip install --require-hashes --no-deps --no-build-isolation -r /tmp/sdists.lock \
    && pip install --no-deps --no-build-isolation /tmp/mtgrpo-src \
    && pip check \
    && python -c "import kfp.dsl.executor_main, mtgrpo.pipelines.steps" \
    && pip uninstall -y pip \
    && rm -rf /tmp/mtgrpo-src /tmp/*.lock

USER 10001
WORKDIR /home/mtgrpo


# The trainer (the default target).
FROM ${BASE_IMAGE} AS trainer

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/mtgrpo \
    MTGRPO_RUN_AS=10001:10001

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

# Python and what Triton's and DeepSpeed's first-use kernel builds call (the C compiler and
# Python's headers); no make, git or pip. The user owns only its home (caches).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev gcc libc6-dev \
       ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 mtgrpo \
    && useradd --uid 10001 --gid 10001 --home-dir /home/mtgrpo --create-home \
       --shell /usr/sbin/nologin mtgrpo

COPY --from=build /opt/venv /opt/venv
WORKDIR /home/mtgrpo

# Pods run as 10001 (their securityContext). SageMaker starts the container as root with
# /opt/ml owned by root: the entry point gives the job's output directories to 10001 and drops
# to it before reading any input (mtgrpo/sagemaker/privileges.py), so `USER` stays root only
# for that first step.
USER root

# Exec form: SageMaker's `train` argument arrives as argv[1] of the module.
ENTRYPOINT ["python", "-m", "mtgrpo.sagemaker"]
