"""The contract both halves share: trainer config schema, metric lines, light imports."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from mtgrpo.contract import TrainerConfig, format_metric_line, metric_definitions, metric_regex
from mtgrpo.contract.config import field_specs, format_value, parse_value
from mtgrpo.contract.metrics import METRICS, parse_metric_line
from mtgrpo.errors import UserError


def test_importing_the_contract_does_not_import_torch():
    code = ("import sys, mtgrpo.contract, mtgrpo.cli; "
            "bad = [m for m in ('torch', 'transformers', 'trl', 'vllm') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_field_has_help_and_a_default_that_validates():
    for name, f in field_specs().items():
        assert f.metadata["help"].strip(), name
    cfg = TrainerConfig(model_name_or_path="m")
    assert cfg.algorithm == "mt_grpo" and cfg.turn_advantage_coef == 1.0


def test_hyperparameters_round_trip_through_strings():
    cfg = TrainerConfig.from_mapping({"model_name_or_path": "Qwen/Qwen3-1.7B",
                                      "learning_rate": 3e-6, "bf16": False,
                                      "num_generations": 4, "algorithm": "grpo_or"})
    strings = cfg.to_hyperparameters()
    assert all(isinstance(v, str) for v in strings.values())
    assert strings["learning_rate"] == "3e-06" and strings["bf16"] == "false"
    assert list(strings) == sorted(strings)
    assert TrainerConfig.from_hyperparameters(strings) == cfg


def test_tuning_job_substitutions_parse():
    # A tuning job substitutes plain strings for the tuned names; SageMaker adds its own keys.
    strings = TrainerConfig(model_name_or_path="m").to_hyperparameters()
    strings.update(learning_rate="4.5e-07", per_device_train_batch_size="3",
                   _tuning_objective_metric="eval_reward")
    cfg = TrainerConfig.from_hyperparameters(strings)
    assert cfg.learning_rate == 4.5e-07 and cfg.per_device_train_batch_size == 3
    assert parse_value("per_device_train_batch_size", "2.0") == 2
    assert format_value(True) == "true" and format_value(0.1) == "0.1"


@pytest.mark.parametrize("values, key, fragment", [
    ({"learning_rat": 1e-6}, "trainer.learning_rat", "did you mean 'learning_rate'"),
    ({"algorithm": "ppo"}, "trainer.algorithm", "one of mt_grpo, grpo_or, grpo_mr"),
    ({"num_generations": 1}, "trainer.num_generations", "int >= 2"),
    ({"learning_rate": "1e-6"}, "trainer.learning_rate", "invalid value '1e-6'"),
    ({"bf16": "yes"}, "trainer.bf16", "true or false"),
    ({"max_tool_calls": 3, "max_turns": 3}, "trainer.max_tool_calls", "max_tool_calls < max_turns"),
])
def test_bad_values_are_refused_with_one_line_naming_file_and_key(values, key, fragment):
    with pytest.raises(UserError) as info:
        TrainerConfig.from_mapping({"model_name_or_path": "m", **values}, source="recipes/x.yaml")
    lines = info.value.lines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"recipes/x.yaml: {key}: ")
    assert fragment in lines[0]


def test_missing_required_value_and_bad_strings():
    with pytest.raises(UserError, match="trainer.model_name_or_path: required value is missing"):
        TrainerConfig.from_mapping({}, source="r.yaml")
    with pytest.raises(UserError, match=r"hyperparameters.json: num_epochs: invalid value 'two'"):
        TrainerConfig.from_hyperparameters({"model_name_or_path": "m", "num_epochs": "two"})
    with pytest.raises(UserError, match=r"hyperparameters.json: lerning_rate: unknown"):
        TrainerConfig.from_hyperparameters({"model_name_or_path": "m", "lerning_rate": "1"})


def test_metric_regexes_read_the_lines_the_format_writes():
    values = {name: (7 if name == "step" else 0.125 * (i + 1)) for i, name in enumerate(METRICS)}
    line = format_metric_line(values)
    for definition in metric_definitions():
        pattern = re.compile(definition["Regex"])
        assert pattern.groups == 1
        match = pattern.search(line)
        assert match, definition
        assert float(match.group(1)) == pytest.approx(values[definition["Name"]], rel=1e-5)
    assert parse_metric_line(line)["step"] == 7


def test_a_metric_does_not_match_inside_a_longer_name():
    line = format_metric_line({"step": 3, "eval_reward": 0.5})
    assert re.search(metric_regex("reward"), line) is None
    assert re.search(metric_regex("eval_reward"), line).group(1) == "0.5"


def test_non_finite_values_are_left_out_and_numbers_in_exponent_form_parse():
    line = format_metric_line({"step": 1, "loss": float("nan"), "kl": 1.5e-9})
    assert "loss" not in line
    assert float(re.search(metric_regex("kl"), line).group(1)) == pytest.approx(1.5e-9)
