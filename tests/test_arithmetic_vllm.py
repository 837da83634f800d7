"""The arithmetic example task end to end on CPU: ``mtgrpo train`` on the shipped local recipe,
the tiny model, the session's real vLLM server. The loop runs with the task's tool, rewards and
records: every logged reward component is the example's, none is TriviaQA's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "local" / "arithmetic-cpu.yaml"


def test_arithmetic_recipe_trains_with_the_examples_rewards(vllm_server, tmp_path, capsys):
    from mtgrpo.cli import main

    data = yaml.safe_load(RECIPE.read_text())
    trainer = data["trainer"]
    for key in ("train_file", "eval_file"):
        trainer[key] = str(RECIPE.parent / trainer[key])
    trainer.update(model_name_or_path=str(vllm_server.model_dir),
                   vllm_server_url=vllm_server.url, max_steps=2, per_device_train_batch_size=8,
                   eval_steps=2, max_eval_samples=2, save_steps=10)
    config = tmp_path / "arithmetic.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    assert main(["train", str(config), "--output", str(out), "--no-start-server"]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "reward_correct" in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    components = {k for r in train_rows for k in r if k.startswith("reward_")}
    assert components - {"reward_turn", "reward_outcome", "reward_std"} == {
        "reward_correct", "reward_calculator_found", "reward_format"}
    for r in train_rows:
        assert 0.0 <= r["reward_correct"] <= 1.0 and 0.0 <= r["reward_format"] <= 1.0
    summary = json.loads((out / "eval_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["train_records"] == 64
    assert (out / "model" / "model.safetensors").is_file()
