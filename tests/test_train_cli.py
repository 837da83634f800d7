"""``mtgrpo train CONFIG --output DIR``: one-line errors for mistakes; a run writes its outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mtgrpo.cli import main


def _write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture()
def task(tmp_path):
    from mtgrpo.testing.synthetic import write_task

    return write_task(tmp_path / "task")


def _config(tiny_model_dir, **overrides):
    trainer = {"model_name_or_path": str(tiny_model_dir), "train_file": "task/train.jsonl",
               "eval_file": "task/eval.jsonl", "corpus_dir": "task/corpus",
               "generation_backend": "transformers", "num_generations": 2,
               "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
               "max_steps": 1, "eval_steps": 1, "max_eval_samples": 2, "max_turns": 2,
               "max_tool_calls": 1, "max_tokens_per_turn": 16, "max_completion_length": 128,
               "search_max_tokens": 32, "learning_rate": 1e-3}
    trainer.update(overrides)
    return {"trainer": trainer}


def _error_lines(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(line.startswith("error: ") for line in err), err
    assert not any("Traceback" in line for line in err)
    return err


@pytest.mark.parametrize("content, expected", [
    ("trainer: [1, 2\n", "invalid YAML"),
    ("job: {}\n", "trainer: missing section"),
    ("trainer: 3\n", "trainer: must be a mapping"),
])
def test_malformed_config_files(tmp_path, capsys, content, expected):
    cfg = _write(tmp_path / "c.yaml", content)
    assert main(["train", str(cfg), "--output", str(tmp_path / "out")]) == 1
    (line,) = _error_lines(capsys)
    assert str(cfg) in line and expected in line


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yaml"), "--output", str(tmp_path)]) == 1
    assert "config file not found" in _error_lines(capsys)[0]


@pytest.mark.parametrize("overrides, key, hint", [
    ({"algorithm": "ppo"}, "trainer.algorithm", "mt_grpo, grpo_or, grpo_mr"),
    ({"learning_rat": 1}, "trainer.learning_rat", "did you mean 'learning_rate'"),
])
def test_bad_values_name_file_key_and_allowed(tmp_path, tiny_model_dir, capsys, task,
                                              overrides, key, hint):
    cfg = _write(tmp_path / "c.yaml", _config(tiny_model_dir, **overrides))
    assert main(["train", str(cfg), "--output", str(tmp_path / "out")]) == 1
    (line,) = _error_lines(capsys)
    assert line.startswith(f"error: {cfg}: {key}: ") and hint in line, line


def test_relative_paths_resolve_against_the_config_file(tmp_path, tiny_model_dir, capsys, task):
    cfg = _write(tmp_path / "c.yaml", _config(tiny_model_dir, train_file="task/missing.jsonl"))
    assert main(["train", str(cfg), "--output", str(tmp_path / "out")]) == 1
    (line,) = _error_lines(capsys)
    assert "trainer.train_file" in line and str(tmp_path / "task" / "missing.jsonl") in line


def test_groups_must_fill_the_generation_batch(tmp_path, tiny_model_dir, capsys, task):
    cfg = _write(tmp_path / "c.yaml", _config(tiny_model_dir, num_generations=3))
    assert main(["train", str(cfg), "--output", str(tmp_path / "out")]) == 1
    (line,) = _error_lines(capsys)
    assert "trainer.num_generations" in line and "gradient_accumulation_steps" in line
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_no_server_and_no_start_is_a_clear_error(tmp_path, tiny_model_dir, capsys, task):
    cfg = _write(tmp_path / "c.yaml", _config(
        tiny_model_dir, generation_backend="vllm", vllm_server_url="http://127.0.0.1:8299"))
    assert main(["train", str(cfg), "--output", str(tmp_path / "out"), "--no-start-server"]) == 1
    (line,) = _error_lines(capsys)
    assert "no vLLM server answers at http://127.0.0.1:8299" in line


def test_vllm_port_flag_replaces_the_configs_port(tmp_path, tiny_model_dir, capsys, task):
    cfg = _write(tmp_path / "c.yaml", _config(
        tiny_model_dir, generation_backend="vllm", vllm_server_url="http://127.0.0.1:8299"))
    out = str(tmp_path / "out")
    assert main(["train", str(cfg), "-o", out, "--no-start-server", "--vllm-port", "8297"]) == 1
    (line,) = _error_lines(capsys)
    assert "no vLLM server answers at http://127.0.0.1:8297" in line
    assert main(["train", str(cfg), "-o", out, "--vllm-port", "70000"]) == 1
    (line,) = _error_lines(capsys)
    assert line == "error: --vllm-port: 70000 is not a TCP port (allowed: 1-65535)"


@pytest.mark.parametrize("module", ["mtgrpo.testing.tiny", "mtgrpo.testing.synthetic",
                                    "mtgrpo.testing.demo", "mtgrpo.examples.arithmetic",
                                    "mtgrpo.trainer.stage_records",
                                    "mtgrpo.trainer.tools.build_corpus"])
def test_every_documented_module_command_has_help_that_writes_nothing(tmp_path, module):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: "), proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_run_writes_metrics_model_and_summary(tmp_path, tiny_model_dir, capsys, task):
    """The transformers backend (no vLLM): one step, one evaluation, final model saved."""
    cfg = _write(tmp_path / "c.yaml", _config(tiny_model_dir))
    out = tmp_path / "out"
    assert main(["train", str(cfg), "--output", str(out)]) == 0
    captured = capsys.readouterr().out
    assert "mtgrpo-metrics: step=1 " in captured
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1] and "eval_reward" in records[0]
    summary = json.loads((out / "eval_summary.json").read_text())
    assert summary["global_step"] == 1 and summary["eval_records"] == 2
    assert (out / "model" / "model.safetensors").is_file()
    assert (out / "checkpoints").is_dir()


def test_server_that_stops_answering_ends_the_run_with_one_error_line(tmp_path, tiny_model_dir,
                                                                      capsys, task):
    """/health says yes, then no request is ever answered: exit 1 within the request timeout."""
    import threading
    import time

    from stand_in import JSONHandler, stand_in

    release = threading.Event()

    class Handler(JSONHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            release.wait(30)  # hangs like a wedged server

    with stand_in(Handler) as url:
        cfg = _write(tmp_path / "c.yaml", _config(tiny_model_dir, generation_backend="vllm",
                                                  vllm_server_url=url, vllm_request_timeout_s=2))
        try:
            start = time.monotonic()
            assert main(["train", str(cfg), "--output", str(tmp_path / "out")]) == 1
            assert time.monotonic() - start < 120
        finally:
            release.set()  # before the server closes: it joins its request threads
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1, lines
    assert "trainer.vllm_server_url: training stopped:" in lines[0] and url in lines[0]


def test_config_is_read_by_the_recipes_yaml_reader(tmp_path, capsys):
    """`1e-6` is a float as in a recipe (plain PyYAML reads a string); null = the default;
    the reader's limits hold (a YAML 1.1-only number is refused with its key)."""
    from mtgrpo.commands.train import load_config

    (tmp_path / "corpus").mkdir()
    (tmp_path / "t.jsonl").write_text("{}\n")
    cfg = _write(tmp_path / "c.yaml", "trainer:\n  model_name_or_path: m\n  train_file: t.jsonl\n"
                                      "  corpus_dir: corpus\n  learning_rate: 1e-6\n"
                                      "  seed: null\n")
    config = load_config(cfg)
    assert config.learning_rate == 1e-6 and config.seed == 42
    cfg.write_text(cfg.read_text().replace("seed: null", "save_steps: 0750"))
    assert main(["train", str(cfg), "--output", str(tmp_path / "out")]) == 1
    (line,) = _error_lines(capsys)
    assert line.startswith(f"error: {cfg}: trainer.save_steps: '0750' is a number in YAML 1.1")


@pytest.mark.slow
def test_a_finished_run_run_again_trains_no_step_past_max_steps(tmp_path, tiny_model_dir, capsys,
                                                                task):
    """Re-running a finished run resumes from its last checkpoint, which is at max_steps: nothing
    more is trained and the record is not extended."""
    cfg = _write(tmp_path / "c.yaml", _config(tiny_model_dir, max_steps=2, save_steps=1,
                                              eval_steps=0))
    out = tmp_path / "out"
    assert main(["train", str(cfg), "--output", str(out)]) == 0
    first = (out / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["train", str(cfg), "--output", str(out)]) == 0
    assert "checkpoint-2 already reached max_steps 2: nothing to train" in capsys.readouterr().out
    assert (out / "metrics.jsonl").read_text() == first
    summary = json.loads((out / "eval_summary.json").read_text())
    assert summary["global_step"] == 2
    assert summary["resumed_from"].endswith("checkpoint-2")
    assert (out / "model" / "model.safetensors").is_file()
