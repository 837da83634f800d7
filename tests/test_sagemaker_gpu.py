"""The GPU path of the container, on a machine with 2+ CUDA GPUs (skipped elsewhere, so in CI).

``python -m mtgrpo.sagemaker train`` with ``generation_backend: transformers`` plans
``accelerate launch`` + DeepSpeed ZeRO-2 over every GPU; SIGTERM mid-run must save a checkpoint
committed by all ranks (they agree through an all-reduce), and the restarted job must resume it
and finish at the same step with metrics numbered once each. Run it on a GPU machine with:
``python -m pytest tests/test_sagemaker_gpu.py -q`` (with ``XLA_PYTHON_CLIENT_PREALLOCATE=false``
where JAX is installed: imported along the way, it would take the GPU memory first).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtgrpo.contract import TrainerConfig
from mtgrpo.sagemaker.checkpoints import is_complete, list_checkpoints
from opt_ml import FIXTURES, lay_out


def _gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(_gpus() < 2, reason="needs 2 or more CUDA GPUs")]


def _steps(root: Path) -> list[int]:
    path = root / "output" / "data" / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line)["step"] for line in lines if line.strip()]


def _start(root: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MTGRPO_OPT_ML": str(root)}
    env.pop("MTGRPO_NUM_GPUS", None)
    return subprocess.Popen([sys.executable, "-m", "mtgrpo.sagemaker", "train"], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def test_deepspeed_job_stops_on_sigterm_and_resumes(tmp_path, tiny_model_dir):
    config = TrainerConfig(
        model_name_or_path=str(tiny_model_dir), generation_backend="transformers",
        deepspeed_stage=2, bf16=True, max_steps=4, save_steps=100, num_generations=2,
        per_device_train_batch_size=2, gradient_accumulation_steps=1, max_turns=2,
        max_tool_calls=1, max_tokens_per_turn=16, max_completion_length=128,
        search_max_tokens=32, learning_rate=1e-3, eval_steps=0, max_eval_samples=2,
        gradient_checkpointing=False)
    root = lay_out(tmp_path / "opt_ml", config.to_hyperparameters(), channels={
        "train": FIXTURES / "qa" / "train.jsonl", "corpus": FIXTURES / "corpus",
        "model": tiny_model_dir})
    proc = _start(root, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 400
        while not _steps(root) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _steps(root), (tmp_path / "first.log").read_text()[-6000:]
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = (tmp_path / "first.log").read_text(errors="replace")
    assert code == 143, first[-6000:]
    line = next(x for x in first.splitlines() if x.startswith("mtgrpo: plan "))
    plan = json.loads(line.removeprefix("mtgrpo: plan "))
    gpus = _gpus()
    assert (plan["world_size"], plan["train_gpus"], plan["starts_vllm"]) == (
        gpus, list(range(gpus)), False)
    (checkpoint,) = [p for _, p in list_checkpoints(root / "checkpoints")]
    assert is_complete(checkpoint), sorted(str(p) for p in checkpoint.rglob("*"))
    names = {p.name for p in checkpoint.rglob("*")}
    assert {f"rng_state_{rank}.pth" for rank in range(gpus)} <= names  # one file per rank
    saved = int(checkpoint.name.split("-")[1])
    assert _steps(root) == list(range(1, saved + 1))

    proc = _start(root, tmp_path / "second.log")
    code = proc.wait(400)
    second = (tmp_path / "second.log").read_text(errors="replace")
    assert code == 0, second[-6000:]
    summary = json.loads((root / "output" / "data" / "eval_summary.json").read_text())
    assert summary["global_step"] == 4 and summary["resumed_from"] == str(checkpoint)
    assert _steps(root) == [1, 2, 3, 4]

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(root / "model").config.num_hidden_layers == 2
    print(first[-3000:], second[-3000:], sep="\n----\n")
