"""The image on Kubeflow Trainer, without vLLM: platform detection, PET_* as the launch plan
(two nodes, plan only), S3 channels and the committed-checkpoint protocol against moto's S3
server, and failures reported as the pod's termination message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtgrpo.contract import TrainerConfig
from mtgrpo.errors import UserError
from mtgrpo.kubeflow import contract as kc
from mtgrpo.kubeflow import s3 as s3sync
from mtgrpo.kubeflow.job import run_kubeflow_job
from mtgrpo.kubeflow.platform import KUBEFLOW, SAGEMAKER, detect, read_topology
from mtgrpo.sagemaker.checkpoints import commit, is_complete
from mtgrpo.sagemaker.contract import OptML
from mtgrpo.sagemaker.failure import JobFailed
from mtgrpo.sagemaker.launcher import build_plan
from tests.moto_s3 import BUCKET, keys, put_tree, s3_server

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PET = {"PET_NNODES": "2", "PET_NODE_RANK": "1", "PET_MASTER_ADDR": "job-node-0-0.job",
       "PET_MASTER_PORT": "29500", "PET_NPROC_PER_NODE": "3"}


def test_platform_detection(tmp_path):
    layout = OptML(tmp_path)
    assert detect({}, layout) == SAGEMAKER  # a local run
    assert detect(PET, layout) == KUBEFLOW
    layout.config_dir.mkdir(parents=True)
    layout.hyperparameters_file.write_text("{}")
    assert detect(PET, layout) == SAGEMAKER  # SageMaker's files win


def test_topology_problems_name_the_variable():
    with pytest.raises(UserError) as excinfo:
        read_topology({**PET, "PET_NNODES": "two", "PET_MASTER_ADDR": ""})
    assert excinfo.value.lines() == [
        "environment: PET_NNODES: invalid value 'two' (allowed: an integer >= 1)",
        "environment: PET_MASTER_ADDR: is not set (allowed: the first pod's address (set by "
        "Kubeflow's torch runtime))"]
    with pytest.raises(UserError, match="PET_NODE_RANK: 2 is not below PET_NNODES 2"):
        read_topology({**PET, "PET_NODE_RANK": "2"})
    assert read_topology({**PET, "PET_NPROC_PER_NODE": "auto"}).nproc_per_node is None


def test_pet_variables_become_the_two_node_plan(tmp_path):
    """accelerate ignores PET_*: the launcher must pass them as its own flags."""
    config = TrainerConfig.from_mapping({"model_name_or_path": "m", "deepspeed_stage": 3})
    layout = OptML(tmp_path)
    plans = {}
    for rank in (0, 1):
        topology = read_topology({**PET, "PET_NODE_RANK": str(rank),
                                  "PET_MASTER_PORT": "23456"})
        plans[rank] = build_plan(config, topology.resource_config(), layout, model="m",
                                 gpu_count=4, master_addr="10.0.0.5",
                                 master_port=topology.master_port, python="python")
    for rank, plan in plans.items():
        argv = plan.training.argv
        flags = dict(zip(argv[3::2], argv[4::2]))
        assert flags["--num_machines"] == "2" and flags["--machine_rank"] == str(rank)
        assert flags["--num_processes"] == "6"  # 3 training GPUs on each of the two pods
        assert flags["--main_process_ip"] == "10.0.0.5"
        assert flags["--main_process_port"] == "23456"
        assert plan.training.env["CUDA_VISIBLE_DEVICES"] == "0,1,2"
        assert plan.training.env["MTGRPO_NODE_RANK"] == str(rank)
        assert plan.vllm_url == "http://10.0.0.5:8000"  # every pod reaches the first one's vLLM
        assert plan.world_size == 6
    assert plans[0].vllm is not None and plans[0].vllm.gpus == "3"
    assert plans[0].vllm.host == "0.0.0.0"  # reachable from the other pod
    assert plans[1].vllm is None


@pytest.fixture
def s3(monkeypatch):
    with s3_server() as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        client = s3sync.client()
        client.create_bucket(Bucket=BUCKET,
                             CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        client.endpoint = endpoint
        yield client


def test_channels_download_whole_prefixes(s3, tmp_path):
    put_tree(s3, FIXTURES / "corpus", "data/corpus")
    s3.put_object(Bucket=BUCKET, Key="data/corpus/", Body=b"")  # a console "folder"
    s3.put_object(Bucket=BUCKET, Key="data/corpus-other/x.jsonl", Body=b"{}")  # a sibling
    put_tree(s3, FIXTURES / "qa" / "train.jsonl", "data/train")
    assert s3sync.download_prefix(s3, f"s3://{BUCKET}/data/corpus", tmp_path / "corpus") == 1
    assert (tmp_path / "corpus" / "passages.jsonl").read_bytes() == \
        (FIXTURES / "corpus" / "passages.jsonl").read_bytes()
    assert s3sync.download_prefix(s3, f"s3://{BUCKET}/data/train/train.jsonl",
                                  tmp_path / "one") == 1
    assert (tmp_path / "one" / "train.jsonl").is_file()
    with pytest.raises(JobFailed, match="no objects under"):
        s3sync.download_prefix(s3, f"s3://{BUCKET}/data/missing", tmp_path / "x")


def _checkpoint(root: Path, step: int, node: int, num_nodes: int, files: dict) -> Path:
    path = root / f"checkpoint-{step}"
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    commit(path, node=node, num_nodes=num_nodes, step=step)
    return path


def test_only_committed_checkpoints_upload_and_count(s3, tmp_path):
    uri = f"s3://{BUCKET}/ckpt/job-a"
    local = tmp_path / "node0"
    _checkpoint(local, 2, 0, 1, {"model.safetensors": "w" * 100, "trainer_state.json": "{}"})
    (local / "checkpoint-4").mkdir()  # being saved: no marker yet
    (local / "checkpoint-4" / "model.safetensors").write_text("partial")
    uploader = s3sync.CheckpointUploader(s3, local, uri, node=0)
    assert uploader.sync() == [2] and uploader.sync() == []  # once
    assert sorted(keys(s3, "ckpt/job-a")) == [
        "ckpt/job-a/checkpoint-2/.mtgrpo-complete/node-00000.json",
        "ckpt/job-a/checkpoint-2/model.safetensors", "ckpt/job-a/checkpoint-2/trainer_state.json"]
    assert s3sync.latest_complete_checkpoint(s3, uri) == 2
    # a newer checkpoint whose upload was cut short (marker there, a file shorter) is skipped
    _checkpoint(local, 6, 0, 1, {"model.safetensors": "v" * 100})
    assert uploader.sync() == [6]
    s3.put_object(Bucket=BUCKET, Key="ckpt/job-a/checkpoint-6/model.safetensors", Body=b"v")
    assert s3sync.latest_complete_checkpoint(s3, uri) == 2
    restored = s3sync.download_checkpoint(s3, uri, 2, tmp_path / "fresh")
    assert is_complete(restored)
    assert s3sync.latest_complete_checkpoint(s3, f"s3://{BUCKET}/ckpt/job-b") is None


def test_a_two_node_checkpoint_needs_both_markers(s3, tmp_path):
    uri = f"s3://{BUCKET}/ckpt/two"
    _checkpoint(tmp_path / "n0", 3, 0, 2, {"rng_state_0.pth": "a"})
    _checkpoint(tmp_path / "n1", 3, 1, 2, {"rng_state_1.pth": "b"})
    s3sync.CheckpointUploader(s3, tmp_path / "n0", uri, node=0).sync()
    assert s3sync.latest_complete_checkpoint(s3, uri) is None
    s3sync.CheckpointUploader(s3, tmp_path / "n1", uri, node=1).sync()
    assert s3sync.latest_complete_checkpoint(s3, uri) == 3
    restored = s3sync.download_checkpoint(s3, uri, 3, tmp_path / "restart")
    assert is_complete(restored)  # every node gets every node's files, as on SageMaker


def _config_dir(tmp_path: Path, hyperparameters: dict, channels: dict) -> Path:
    config = tmp_path / "etc-mtgrpo"
    config.mkdir()
    (config / kc.HYPERPARAMETERS_KEY).write_text(json.dumps(hyperparameters))
    (config / kc.PLATFORM_KEY).write_text(json.dumps({
        "channels": channels, "output_path": f"s3://{BUCKET}/out",
        "checkpoint_s3_uri": f"s3://{BUCKET}/ckpt"}))
    return config


def _env(tmp_path: Path, config: Path, **extra: str) -> dict:
    return {"PET_NNODES": "1", "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "j-node-0-0.j",
            "PET_MASTER_PORT": "29500", "PET_NPROC_PER_NODE": "1", kc.JOB_NAME_ENV: "j",
            kc.CONFIG_DIR_ENV: str(config), "MTGRPO_NUM_GPUS": "0",
            "MTGRPO_TERMINATION_LOG": str(tmp_path / "termination-log"), **extra}


def test_a_bad_tuned_value_is_the_termination_message(tmp_path, monkeypatch):
    config = _config_dir(tmp_path, TrainerConfig.from_mapping({"model_name_or_path": "m"}).to_hyperparameters(), {})
    env = _env(tmp_path, config, MTGRPO_HP_learning_rat="0.1")
    (tmp_path / "termination-log").write_text("")  # the kubelet creates the file
    assert run_kubeflow_job(env, OptML(tmp_path / "opt_ml")) == 1
    message = (tmp_path / "termination-log").read_text()
    assert "learning_rat: unknown trainer hyperparameter; did you mean 'learning_rate'?" in \
        message and "\n" not in message


def test_a_missing_channel_is_the_termination_message(s3, tmp_path):
    config = _config_dir(tmp_path, TrainerConfig.from_mapping({"model_name_or_path": "m"}).to_hyperparameters(),
                         {"train": f"s3://{BUCKET}/data/nothing-here"})
    env = _env(tmp_path, config, AWS_ENDPOINT_URL=s3.endpoint)
    assert run_kubeflow_job(env, OptML(tmp_path / "opt_ml")) == 1
    assert (tmp_path / "termination-log").read_text() == \
        f"no objects under s3://{BUCKET}/data/nothing-here"


def test_tuned_values_override_the_config_map(tmp_path):
    from mtgrpo.kubeflow.job import hyperparameters

    config = _config_dir(tmp_path, {"learning_rate": "1e-06", "max_steps": "100"}, {})
    values = hyperparameters(config, {"MTGRPO_HP_learning_rate": "3.2e-06", "OTHER": "x"})
    assert values == {"learning_rate": "3.2e-06", "max_steps": "100"}


def test_node_zero_prunes_s3_to_save_total_limit(s3, tmp_path):
    uri = f"s3://{BUCKET}/ckpt/prune"
    uploader = s3sync.CheckpointUploader(s3, tmp_path, uri, node=0, keep=2)
    for step in (1, 2, 3):
        _checkpoint(tmp_path, step, 0, 1, {"w.bin": "x" * step})
        uploader.sync()
    steps = sorted({k.split("/")[2] for k in keys(s3, "ckpt/prune/")})
    assert steps == ["checkpoint-2", "checkpoint-3"]
    # a newer checkpoint still uploading (no marker) never causes a complete one to go
    s3.put_object(Bucket=BUCKET, Key="ckpt/prune/checkpoint-9/w.bin", Body=b"partial")
    assert s3sync.prune_checkpoints(s3, uri, 2) == []
    assert s3sync.latest_complete_checkpoint(s3, uri) == 3
