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
from opt_ml import (FIXTURES, lay_out, metrics_steps, sigterm_after_first_step, start_train,
                    wait_then_kill)


def _gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(_gpus() < 2, reason="needs 2 or more CUDA GPUs")]


def _start(root: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "MTGRPO_OPT_ML": str(root)}
    env.pop("MTGRPO_NUM_GPUS", None)
    return start_train(env, log)


def _run_to_end(root: Path, log: Path, timeout: float) -> tuple[int | None, str]:
    """Start the job and wait for its exit (killed after ``timeout``); (exit code, log)."""
    code = wait_then_kill(_start(root, log), timeout)
    return code, log.read_text(errors="replace")


def _zero2_config(model_dir) -> TrainerConfig:
    """A few ZeRO-2 steps of the tiny model with transformers rollouts (no vLLM on the GPU host)."""
    return TrainerConfig(
        model_name_or_path=str(model_dir), generation_backend="transformers",
        deepspeed_stage=2, bf16=True, max_steps=4, save_steps=100, num_generations=2,
        per_device_train_batch_size=2, gradient_accumulation_steps=1, max_turns=2,
        max_tool_calls=1, max_tokens_per_turn=16, max_completion_length=128,
        search_max_tokens=32, learning_rate=1e-3, eval_steps=0, max_eval_samples=2,
        gradient_checkpointing=False)



def test_deepspeed_job_stops_on_sigterm_and_resumes(tmp_path, tiny_model_dir):
    config = _zero2_config(tiny_model_dir)
    root = lay_out(tmp_path / "opt_ml", config.to_hyperparameters(), channels={
        "train": FIXTURES / "qa" / "train.jsonl", "corpus": FIXTURES / "corpus",
        "model": tiny_model_dir})
    code, _ = sigterm_after_first_step(_start(root, tmp_path / "first.log"),
                                       lambda: metrics_steps(root), tmp_path / "first.log",
                                       start_timeout=400, stop_timeout=120, tail=6000)
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
    assert metrics_steps(root) == list(range(1, saved + 1))

    code, second = _run_to_end(root, tmp_path / "second.log", 400)
    assert code == 0, second[-6000:]
    summary = json.loads((root / "output" / "data" / "eval_summary.json").read_text())
    assert summary["global_step"] == 4 and summary["resumed_from"] == str(checkpoint)
    assert metrics_steps(root) == [1, 2, 3, 4]

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(root / "model").config.num_hidden_layers == 2
    print(first[-3000:], second[-3000:], sep="\n----\n")


def test_zero3_job_saves_the_whole_model_as_safetensors(tmp_path, tiny_model_dir):
    """ZeRO-3 shards every parameter across the ranks; without the shipped config's
    ``stage3_gather_16bit_weights_on_model_save`` the final save writes no usable weights. The
    saved model must hold every tensor at full shape with the real (gathered) values."""
    import dataclasses

    import torch
    from safetensors.torch import load_file

    config = dataclasses.replace(_zero2_config(tiny_model_dir), deepspeed_stage=3, max_steps=2)
    root = lay_out(tmp_path / "opt_ml", config.to_hyperparameters(), channels={
        "train": FIXTURES / "qa" / "train.jsonl", "corpus": FIXTURES / "corpus",
        "model": tiny_model_dir})
    code, log = _run_to_end(root, tmp_path / "zero3.log", 600)
    assert code == 0, log[-6000:]
    plan = json.loads(next(x for x in log.splitlines()
                           if x.startswith("mtgrpo: plan ")).removeprefix("mtgrpo: plan "))
    assert plan["world_size"] == _gpus()
    assert metrics_steps(root) == [1, 2]
    files = sorted(p.name for p in (root / "model").iterdir())
    assert "model.safetensors" in files, files
    assert not any(f.startswith("pytorch_model") or f.startswith("global_step") for f in files)
    saved = load_file(root / "model" / "model.safetensors")
    initial = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert set(saved) == set(initial)
    assert {k: tuple(v.shape) for k, v in saved.items()} == {
        k: tuple(v.shape) for k, v in initial.items()}
    # The real weights, gathered: two AdamW steps at lr 1e-3 move each by about 2e-3 at most
    # (plus bf16 rounding), so every tensor stays close to its initial value; a tensor of
    # zeros or of another shard's values would not.
    drift = {k: (saved[k].float() - initial[k].float()).abs().max().item() for k in saved}
    assert max(drift.values()) < 0.01, drift
    assert all(saved[k].float().abs().sum() > 0 for k in saved  # (the biases start at 0)
               if initial[k].float().abs().sum() > 0)
    changed = [k for k in saved if not torch.equal(saved[k], initial[k].to(saved[k].dtype))]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(root / "model")  # loads without missing weights
    print(log[-3000:], f"{len(changed)} of {len(saved)} tensors changed by training, "
          f"largest change {max(drift.values()):.2e}", sep="\n")


def test_two_hosts_stop_together_and_resume_after_the_checkpoint_sync(tmp_path, tiny_model_dir):
    """Two "hosts" on one machine (distinct names, one GPU each): ranks, master address and the
    per-node commit. SIGTERM reaches only the second host; both stop at the same step. Each
    node's checkpoint is incomplete alone until the S3 sync (simulated) merges them."""
    import shutil

    from mtgrpo.sagemaker.checkpoints import MARKER_DIR

    hosts = ("localhost", "127.0.0.1")
    config = _zero2_config(tiny_model_dir)
    roots = [lay_out(tmp_path / f"node{rank}", config.to_hyperparameters(), channels={
        "train": FIXTURES / "qa" / "train.jsonl", "corpus": FIXTURES / "corpus",
        "model": tiny_model_dir}, hosts=hosts, current_host=host, network_interface_name="lo")
        for rank, host in enumerate(hosts)]

    def start_all(tag):
        procs = []
        for rank, root in enumerate(roots):
            env = {**os.environ, "MTGRPO_OPT_ML": str(root), "CUDA_VISIBLE_DEVICES": str(rank)}
            env.pop("MTGRPO_NUM_GPUS", None)
            log = tmp_path / f"{tag}-node{rank}.log"
            procs.append(subprocess.Popen([sys.executable, "-m", "mtgrpo.sagemaker", "train"],
                                          env=env, stdout=log.open("wb"),
                                          stderr=subprocess.STDOUT))
        return procs

    def logs(tag):
        return "\n".join((tmp_path / f"{tag}-node{r}.log").read_text(errors="replace")[-3000:]
                         for r in range(2))

    procs = start_all("first")
    try:
        deadline = time.monotonic() + 400
        while not metrics_steps(roots[0]) and all(p.poll() is None for p in procs) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert metrics_steps(roots[0]), logs("first")
        os.kill(procs[1].pid, signal.SIGTERM)
        codes = [p.wait(120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [143, 143], logs("first")
    plans = [json.loads(next(x for x in (tmp_path / f"first-node{r}.log").read_text()
                             .splitlines() if x.startswith("mtgrpo: plan "))
                        .removeprefix("mtgrpo: plan ")) for r in range(2)]
    assert [(p["node_rank"], p["num_nodes"], p["world_size"]) for p in plans] == [
        (0, 2, 2), (1, 2, 2)]
    assert plans[0]["master_addr"] == plans[1]["master_addr"] == "127.0.0.1"
    ckpts = [[p for _, p in list_checkpoints(root / "checkpoints")] for root in roots]
    assert len(ckpts[0]) == len(ckpts[1]) == 1 and ckpts[0][0].name == ckpts[1][0].name
    assert [sorted(m.name for m in (c[0] / MARKER_DIR).glob("*.json")) for c in ckpts] == [
        ["node-00000.json"], ["node-00001.json"]]
    assert not is_complete(ckpts[0][0]) and not is_complete(ckpts[1][0])
    for a, b in ((0, 1), (1, 0)):  # SageMaker's restart: every node gets the shared S3 prefix
        shutil.copytree(roots[a] / "checkpoints", roots[b] / "checkpoints", dirs_exist_ok=True)
    assert is_complete(ckpts[0][0]) and is_complete(ckpts[1][0])
    saved = int(ckpts[0][0].name.split("-")[1])
    assert metrics_steps(roots[0]) == list(range(1, saved + 1))

    procs = start_all("second")
    try:
        codes = [p.wait(400) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0, 0], logs("second")
    summary = json.loads((roots[0] / "output" / "data" / "eval_summary.json").read_text())
    assert summary["global_step"] == 4 and summary["resumed_from"] == str(ckpts[0][0])
    assert metrics_steps(roots[0]) == [1, 2, 3, 4]
    assert (roots[0] / "model" / "model.safetensors").is_file()
