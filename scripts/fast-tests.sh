#!/usr/bin/env bash
# The fast loop: the manifest side (recipes, templates, render, validate, plan, gitops, docs,
# operate commands against fakes) and the unit tests that need neither torch nor a vLLM server.
# 43 s of CPU time (docs/development.md); the full run (README, .ci/run) takes 17+ minutes.
# Extra arguments go to pytest (e.g. -x, -k NAME, a file).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
# Test files that load torch, transformers, TRL or a tiny model for most of their tests: their
# fast tests run in the full run only. tests/gpu/ needs CUDA.
HEAVY=(
    test_attention_mask test_benchmarks_tiny test_checkpoints test_fast_logprobs
    test_grpo_trainer test_launcher test_liger_sampling test_lora test_master_weights
    test_metrics_log test_overlap test_rollout_failures test_rollout_vllm test_sagemaker_job
    test_sagemaker_task test_train_cli test_transformers_sampler test_arithmetic_vllm
    test_kubeflow_job test_learning test_offline test_on_policy
)
ignore=(--ignore=tests/gpu)
for name in "${HEAVY[@]}"; do ignore+=("--ignore=tests/$name.py"); done
exec "$PY" -m pytest -q -m "not slow and not vllm" -p no:cacheprovider "${ignore[@]}" "$@"
