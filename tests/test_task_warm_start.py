"""``mtgrpo train --warm-start``: a task written from docs/tasks.md alone (a three-argument
tool, a turn reward for a call that worked, an outcome reward) is called and scored in a local
CPU run of the tiny model, which without the warm start never calls it."""

from __future__ import annotations

import json

import pytest

from mtgrpo.cli import main

PLUGIN = '''from mtgrpo.task import FunctionTool, reward

STOCK = {"A-1042": 3, "B-7": 0}


def _stock(sku: str, shop: str, limit: int) -> str:
    if sku not in STOCK:
        raise ValueError(f"no item {sku}")
    return f"{min(STOCK[sku], limit)} of {sku} in {shop}"


stock = FunctionTool(
    _stock, name="stock", description="How many of an item a shop holds.",
    parameters={"type": "object", "required": ["sku", "shop", "limit"],
                "additionalProperties": False,
                "properties": {"sku": {"type": "string"}, "shop": {"type": "string"},
                               "limit": {"type": "integer"}}},
    example_args={"sku": "A-1042", "shop": "Berlin", "limit": 5})


@reward(level="turn")
def stock_called(episode):
    return float(episode.tool_successes > 0)


@reward(level="outcome")
def correct(episode, parser):
    answer = parser.final_answer(episode)
    return float(answer is not None and answer.strip() in episode.record.aliases)
'''


def _task(folder):
    folder.mkdir(parents=True)
    (folder / "shop_task.py").write_text(PLUGIN)
    rows = [{"question": f"How many A-1042 are in shop {i}?", "aliases": ["3"]}
            for i in range(16)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "local.yaml").write_text(
        "trainer:\n"
        "  model_name_or_path: {model}\n"
        "  train_file: train.jsonl\n"
        "  task_tools: shop_task:stock\n"
        "  task_rewards: shop_task:stock_called,shop_task:correct\n"
        "  generation_backend: transformers\n"
        "  num_generations: 4\n  per_device_train_batch_size: 8\n"
        "  gradient_accumulation_steps: 1\n  max_steps: 2\n  learning_rate: 1.0e-3\n"
        "  max_turns: 2\n  max_tool_calls: 1\n  max_tokens_per_turn: 96\n"
        "  max_completion_length: 256\n  max_prompt_length: 1024\n  save_steps: 2\n"
        "  eval_steps: 0\n  bf16: false\n  gradient_checkpointing: false\n")
    return folder / "local.yaml"


@pytest.mark.slow
def test_a_new_task_is_called_and_scored_after_the_warm_start(tmp_path, tiny_model_dir,
                                                               capsys, monkeypatch):
    config = _task(tmp_path / "task")
    config.write_text(config.read_text().format(model=tiny_model_dir))
    monkeypatch.chdir(tmp_path)  # not the plug-in's folder: found beside the config
    out = tmp_path / "out"
    assert main(["train", str(config), "--output", str(out), "--warm-start"]) == 0
    printed = capsys.readouterr().out
    assert "warm start: tool called in" in printed
    assert (out / "warm-start" / "config.json").is_file()
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2]
    # the tool is called and its call scored: the turn reward is no longer 0
    assert max(s["reward_stock_called"] for s in steps) > 0.5, steps
    summary = json.loads((out / "eval_summary.json").read_text())
    assert summary["global_step"] == 2


def test_without_a_tool_the_warm_start_is_refused_in_one_line(tmp_path, tiny_model_dir,
                                                              capsys):
    from mtgrpo.commands.train import load_config, run_paths
    from mtgrpo.errors import UserError
    from mtgrpo.testing.task_warm_start import FormatSampler, warm_start_task

    config = _task(tmp_path / "task")
    config.write_text(config.read_text().format(model=tiny_model_dir).replace(
        "  task_tools: shop_task:stock\n", "  task_tools: ''\n"))
    import sys
    monkeypatch_path = str(tmp_path / "task")
    sys.path.insert(0, monkeypatch_path)
    try:
        cfg = load_config(config)
        with pytest.raises(UserError) as err:
            warm_start_task(cfg, run_paths(cfg, tmp_path / "out"), tmp_path / "w",
                            source=str(config))
    finally:
        sys.path.remove(monkeypatch_path)
    assert err.value.lines() == [f"{config}: trainer.task_tools: --warm-start teaches a tool's "
                                 "call format, and the task has no tool (allowed: a task with "
                                 "at least one tool)"]
    assert FormatSampler is not None
