"""The /opt/ml contract: hyperparameters, resource and input data config, channels, failures."""

from __future__ import annotations

import json
import tarfile

import pytest

from mtgrpo.contract import TrainerConfig
from mtgrpo.errors import UserError
from mtgrpo.sagemaker.contract import (OptML, read_hyperparameters, read_input_data_config,
                                       read_resource_config, resolve_paths)
from mtgrpo.sagemaker.failure import MAX_REASON, JobFailed, describe, report, write_failure
from opt_ml import FIXTURES, lay_out

BASE = {"model_name_or_path": "/models/base", "max_steps": "3", "learning_rate": "1e-05",
        "bf16": "false"}


@pytest.fixture
def layout(tmp_path, monkeypatch):
    monkeypatch.setenv("MTGRPO_OPT_ML", str(tmp_path / "opt_ml"))
    lay_out(tmp_path / "opt_ml", BASE)
    return OptML.from_env()


def test_root_moves_with_env(tmp_path):
    layout = OptML.from_env({"MTGRPO_OPT_ML": str(tmp_path)})
    assert layout.hyperparameters_file == tmp_path / "input/config/hyperparameters.json"
    assert layout.failure_file == tmp_path / "output/failure"
    assert layout.checkpoint_dir == tmp_path / "checkpoints"
    assert OptML.from_env({}).root.as_posix() == "/opt/ml"


def test_hyperparameters_parse_back_through_the_schema(layout):
    config = read_hyperparameters(layout)
    assert (config.max_steps, config.learning_rate, config.bf16) == (3, 1e-5, False)
    # The renderer's every-field string map comes back to the same config.
    full = TrainerConfig(model_name_or_path="/m", max_steps=7).to_hyperparameters()
    full["_tuning_objective_metric"] = "eval_reward"  # added by SageMaker in tuning trials
    layout.hyperparameters_file.write_text(json.dumps(full))
    assert read_hyperparameters(layout) == TrainerConfig(model_name_or_path="/m", max_steps=7)


def test_bad_hyperparameter_names_file_and_key(layout):
    layout.hyperparameters_file.write_text(json.dumps({**BASE, "learning_rat": "0.1",
                                                      "max_steps": "three"}))
    with pytest.raises(UserError) as err:
        read_hyperparameters(layout)
    lines = err.value.lines()
    assert any("hyperparameters.json: learning_rat: unknown trainer hyperparameter; did you "
               "mean 'learning_rate'?" in line for line in lines)
    assert any("max_steps: invalid value 'three'" in line for line in lines)
    assert all("\n" not in line for line in lines)


def test_hyperparameters_not_json(layout):
    layout.hyperparameters_file.write_text("{not json")
    with pytest.raises(UserError, match="hyperparameters.json: not valid JSON"):
        read_hyperparameters(layout)


def test_resource_config(layout):
    layout.resource_config_file.write_text(json.dumps(
        {"current_host": "algo-2", "hosts": ["algo-1", "algo-2"],
         "network_interface_name": "eth0"}))
    rc = read_resource_config(layout)
    assert (rc.node_rank, rc.master_host, rc.is_master, rc.num_hosts) == (1, "algo-1", False, 2)
    layout.resource_config_file.write_text(json.dumps({"current_host": "algo-3",
                                                       "hosts": ["algo-1", "algo-2"]}))
    with pytest.raises(UserError, match="current_host: 'algo-3' is not in hosts"):
        read_resource_config(layout)
    layout.resource_config_file.unlink()
    assert read_resource_config(layout).hosts == ("algo-1",)


def test_input_data_config_rejects_unknown_channel_and_pipe_mode(layout):
    layout.input_data_config_file.write_text(json.dumps(
        {"training": {"TrainingInputMode": "File"}, "corpus": {"TrainingInputMode": "Pipe"}}))
    with pytest.raises(UserError) as err:
        read_input_data_config(layout)
    text = "\n".join(err.value.lines())
    assert "training: unknown channel; did you mean 'train'?" in text
    assert "corpus.TrainingInputMode: invalid value 'Pipe' (allowed: File or FastFile)" in text


def test_channels_resolve_to_run_paths(layout):
    paths = resolve_paths(read_hyperparameters(layout), layout)
    data = layout.data_dir
    assert paths.train_file == data / "train" / "train.jsonl"
    assert paths.eval_file == data / "eval" / "eval.jsonl"
    assert paths.corpus_dir == data / "corpus"
    assert paths.model == "/models/base"  # no model channel: model_name_or_path
    assert (paths.model_dir, paths.output_dir, paths.checkpoint_dir) == (
        layout.model_dir, layout.output_data_dir, layout.checkpoint_dir)


def test_missing_required_channel_is_named(tmp_path):
    root = tmp_path / "opt_ml"
    lay_out(root, BASE, channels={"train": FIXTURES / "qa" / "train.jsonl"})
    layout = OptML(root)
    with pytest.raises(UserError) as err:
        resolve_paths(read_hyperparameters(layout), layout)
    (line,) = err.value.lines()
    assert "input/data/corpus: required channel 'corpus' is missing or empty (present: train)" \
        in line
    assert "(allowed: channels train, corpus required; eval, model, code optional)" in line


def test_ambiguous_records_and_explicit_train_file(layout):
    (layout.channel_dir("train") / "more.jsonl").write_text("{}\n")
    config = read_hyperparameters(layout)
    with pytest.raises(UserError, match=r"expected one \.jsonl or \.parquet file, found 2 "
                                        r"\(more\.jsonl, train\.jsonl\)"):
        resolve_paths(config, layout)
    chosen = resolve_paths(config.replace(train_file="train.jsonl"), layout)
    assert chosen.train_file == layout.channel_dir("train") / "train.jsonl"
    with pytest.raises(UserError, match="train_file: file .*nope.jsonl' not found"):
        resolve_paths(config.replace(train_file="nope.jsonl"), layout)


def test_model_channel_directory_or_tarball(layout, tmp_path):
    model = tmp_path / "model-src"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"x" * 10)
    channel = layout.channel_dir("model")
    channel.mkdir()
    with tarfile.open(channel / "model.tar.gz", "w:gz") as tar:  # what SageMaker uploads
        for f in sorted(model.iterdir()):
            tar.add(f, arcname=f.name)
    paths = resolve_paths(read_hyperparameters(layout), layout)
    assert (layout.work_dir / "model-channel" / "model.safetensors").read_bytes() == b"x" * 10
    assert paths.model == str(layout.work_dir / "model-channel")
    (channel / "model.tar.gz").unlink()
    (channel / "config.json").write_text("{}")
    assert resolve_paths(read_hyperparameters(layout), layout).model == str(channel)


def test_failure_file_is_one_line_first_writer_wins(tmp_path):
    path = tmp_path / "output" / "failure"
    assert write_failure(path, "vLLM server exited:\nCUDA out of memory " + "x" * 2000)
    text = path.read_text()
    assert text.startswith("vLLM server exited: CUDA out of memory")
    assert len(text.strip()) == MAX_REASON and text.count("\n") == 1
    assert not write_failure(path, "training exited with code 1")
    assert path.read_text() == text
    assert describe(JobFailed("x  y")) == "x y"


def test_report_user_error_and_bug(tmp_path, capsys):
    path = tmp_path / "failure"
    err = UserError([])
    try:
        TrainerConfig.from_hyperparameters({"model_name_or_path": "m", "top_p": "2"})
    except UserError as e:
        err = e
    assert report(path, err) == 1
    assert path.read_text().strip() == ("hyperparameters.json: top_p: 2.0 is out of range "
                                        "(allowed: float in (0.0, 1.0])")
    assert "Traceback" not in capsys.readouterr().err  # a user mistake: no traceback
    path.unlink()
    try:
        1 / 0  # noqa: B018 (a real exception, raised by Python)
    except ZeroDivisionError as bug:
        assert report(path, bug) == 2
    assert path.read_text().strip() == "ZeroDivisionError: division by zero"
    assert "Traceback" in capsys.readouterr().err  # a bug keeps its traceback in the log


def test_checkpoint_local_path_from_checkpointconfig(layout):
    assert layout.checkpoint_dir == layout.root / "checkpoints"
    layout.checkpoint_config_file.write_text(json.dumps(
        {"LocalPath": "/opt/ml/ckpt", "S3Uri": "s3://bucket/ckpt"}))
    assert layout.checkpoint_dir == layout.root / "ckpt"  # follows a moved root
    layout.checkpoint_config_file.write_text(json.dumps({"LocalPath": "/scratch/ckpt"}))
    assert layout.checkpoint_dir.as_posix() == "/scratch/ckpt"
    assert resolve_paths(read_hyperparameters(layout), layout).checkpoint_dir.as_posix() == \
        "/scratch/ckpt"
    layout.checkpoint_config_file.write_text("{")
    with pytest.raises(UserError, match="checkpointconfig.json: not valid JSON"):
        _ = layout.checkpoint_dir
