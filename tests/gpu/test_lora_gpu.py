"""LoRA through the container on CUDA (skipped without a GPU, so in CI): bf16 base with fp32
adapters, gradient checkpointing on, the padding-free log-prob path, transformers rollouts.

``python -m mtgrpo.sagemaker train`` with ``lora_r`` 8 and ``deepspeed_stage: 0`` on every
visible GPU (one GPU: one process; more: plain DDP). The job must exit 0 and save the merged
policy (base checkpoint names, loadable by transformers) with the adapter in ``adapter/``; the
base weights that carry no adapter (embeddings, norms) must be the initial ones, bit for bit
at the saved dtype, and the saved adapter over the base must give the merged model's logits.
(The random model earns no reward from the QA fixture, so its adapters need not move: that
they train is tests/test_lora.py's job.) Run on a GPU machine with
``python -m pytest tests/test_lora_gpu.py -q``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mtgrpo.contract import TrainerConfig
from opt_ml import FIXTURES, lay_out


def _gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_gpus() < 1, reason="needs a CUDA GPU")]


def test_lora_job_trains_adapters_and_saves_the_merged_model(tmp_path, tiny_model_dir):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    config = TrainerConfig(
        model_name_or_path=str(tiny_model_dir), generation_backend="transformers",
        deepspeed_stage=0, bf16=True, gradient_checkpointing=True, lora_r=8, lora_alpha=16,
        max_steps=3, save_steps=2, num_generations=2, per_device_train_batch_size=2,
        gradient_accumulation_steps=1, max_turns=2, max_tool_calls=1, max_tokens_per_turn=16,
        max_completion_length=128, search_max_tokens=32, learning_rate=1e-2, eval_steps=0,
        max_eval_samples=2)
    root = lay_out(tmp_path / "opt_ml", config.to_hyperparameters(), channels={
        "train": FIXTURES / "qa" / "train.jsonl", "corpus": FIXTURES / "corpus",
        "model": tiny_model_dir})
    env = {**os.environ, "MTGRPO_OPT_ML": str(root)}
    env.pop("MTGRPO_NUM_GPUS", None)
    log = tmp_path / "job.log"
    proc = subprocess.run([sys.executable, "-m", "mtgrpo.sagemaker", "train"], env=env,
                          stdout=log.open("wb"), stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    steps = [json.loads(x)["step"] for x in
             (root / "output" / "data" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    checkpoint = root / "checkpoints" / "checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").is_file(), sorted(
        p.name for p in checkpoint.iterdir())

    model_dir = root / "model"
    assert (model_dir / "adapter" / "adapter_model.safetensors").is_file()
    saved = load_file(model_dir / "model.safetensors")
    initial = load_file(tiny_model_dir / "model.safetensors")
    assert set(saved) == set(initial)
    frozen = [k for k in saved if "proj" not in k]  # embeddings and norms carry no adapter
    assert frozen and all(torch.equal(saved[k], initial[k].to(saved[k].dtype)) for k in frozen)
    merged = AutoModelForCausalLM.from_pretrained(model_dir)  # no missing/unexpected weights
    # The adapter beside it is the same policy (peft's own forward over the base).
    from peft import PeftModel

    peft_policy = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), model_dir / "adapter").eval()
    ids = torch.tensor([[3, 17, 40, 99, 250, 7, 512, 33]])
    with torch.no_grad():
        gap = (merged(input_ids=ids).logits.float()
               - peft_policy(input_ids=ids).logits.float()).abs().max().item()
    assert gap < 0.05, gap  # bf16 rounding of the merged weights
    print(text[-3000:], f"merged vs adapter logits: max gap {gap:.2e}", sep="\n")
