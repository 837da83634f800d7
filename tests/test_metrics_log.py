"""metrics.jsonl and the stdout metric lines, written by a real (tiny, CPU) training run.

The run uses ``train.run`` end to end with the scripted sampler of the synthetic task (no vLLM
needed): two optimizer steps, an evaluation after each. Every SageMaker metric regex the
renderer builds (``metric_definitions()``) must match a line the logger actually printed and
read back the value that ``metrics.jsonl`` holds.
"""

from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace

import pytest
import torch

from mtgrpo.contract import METRICS, TrainerConfig, metric_definitions, parse_metric_line
from mtgrpo.contract.metrics import GPU_METRICS
from mtgrpo.trainer.paths import RunPaths

REQUIRED = ("step", "reward", "eval_reward", "exact_match", "tool_success_rate", "loss", "kl",
            "grad_norm", "rollout_seconds", "weight_sync_seconds", "tokens_per_second")


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    import contextlib

    from transformers import AutoTokenizer

    from mtgrpo.testing.synthetic import ScriptedSampler, write_task
    from mtgrpo.trainer.train import run

    tmp = tmp_path_factory.mktemp("metrics")
    task = write_task(tmp / "task")
    cfg = TrainerConfig(model_name_or_path=str(tiny_model_dir), num_generations=2,
                        per_device_train_batch_size=2, gradient_accumulation_steps=2,
                        max_steps=2, eval_steps=1, save_steps=100, learning_rate=1e-3,
                        max_turns=2, max_tool_calls=1, max_tokens_per_turn=64,
                        max_completion_length=256, max_eval_samples=4, search_max_tokens=64)
    out = tmp / "out"
    paths = RunPaths(str(tiny_model_dir), task / "train.jsonl", task / "eval.jsonl",
                     task / "corpus", out, out / "model", out / "checkpoints")
    stdout = io.StringIO()
    sampler = ScriptedSampler(AutoTokenizer.from_pretrained(tiny_model_dir))
    with contextlib.redirect_stdout(stdout):
        summary = run(cfg, paths, sampler=sampler)
    return SimpleNamespace(out=out, stdout=stdout.getvalue(), summary=summary)


def test_one_json_line_per_step_with_required_keys(tiny_run):
    records = [json.loads(x) for x in (tiny_run.out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        missing = [k for k in REQUIRED if k not in record]
        assert not missing, missing
        assert record["exact_match"] == 1.0  # the scripted policy always answers right
        assert record["tool_success_rate"] == 1.0
        assert record["eval_exact_match"] == 1.0
        assert record["reward"] == pytest.approx(record["eval_reward"])
        assert record["rollout_seconds"] > 0 and record["tokens_per_second"] > 0


def test_every_metric_regex_matches_a_written_line(tiny_run):
    records = [json.loads(x) for x in (tiny_run.out / "metrics.jsonl").read_text().splitlines()]
    lines = [x for x in tiny_run.stdout.splitlines() if parse_metric_line(x)]
    assert len(lines) == len(records)
    for definition in metric_definitions():
        name = definition["Name"]
        values = [float(m.group(1)) for line in lines
                  if (m := re.search(definition["Regex"], line))]
        expected = [r[name] for r in records if name in r]
        if name in GPU_METRICS and not torch.cuda.is_available():
            assert not values and not expected, name  # a CPU run: never logged
            continue
        assert values, f"no printed line matches the regex of {name}"
        assert values == pytest.approx(expected, rel=1e-5, abs=1e-9), name
    assert set(METRICS) - GPU_METRICS <= set(records[-1]) | {"learning_rate"}


def test_summary_and_final_model(tiny_run):
    from transformers import AutoModelForCausalLM

    summary = json.loads((tiny_run.out / "eval_summary.json").read_text())
    assert summary == json.loads(json.dumps(tiny_run.summary, sort_keys=True))
    assert summary["global_step"] == 2 and summary["eval"]["eval_exact_match"] == 1.0
    model = AutoModelForCausalLM.from_pretrained(tiny_run.out / "model")
    assert model.config.num_hidden_layers == 2
    assert (tiny_run.out / "model" / "tokenizer.json").is_file()


def test_tensorboard_events_hold_the_metrics_jsonl_values(tiny_run):
    """The run's TensorBoard events, read back with tensorboard's own event reader, hold every
    metrics.jsonl value at its step under the grouped tag (reward/, eval/, time/, ...)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mtgrpo.trainer.tensorboard_log import tag_for

    events = EventAccumulator(str(tiny_run.out / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    records = [json.loads(x) for x in (tiny_run.out / "metrics.jsonl").read_text().splitlines()]
    for name in ("reward", "eval_reward", "exact_match", "eval_exact_match",
                 "tool_success_rate", "loss", "kl", "grad_norm", "learning_rate",
                 "rollout_seconds", "weight_sync_seconds", "tokens_per_second"):
        assert tag_for(name) in tags, (name, sorted(tags))
    assert {"reward/reward", "eval/reward", "time/rollout_seconds",
            "rollout/tool_success_rate", "train/loss"} <= tags
    for record in records:
        for name, value in record.items():
            if name == "step":
                continue
            by_step = {e.step: e.value for e in events.Scalars(tag_for(name))}
            assert by_step[record["step"]] == pytest.approx(value, rel=1e-6), name
