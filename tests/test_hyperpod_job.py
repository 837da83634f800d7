"""The image's HyperPod entry (``python -m mtgrpo.hyperpod train``, what hyperpodrun starts once
per pod): the agent's variables as topology, the rendered ConfigMap read back, FSx channels
linked, and end to end on CPU: S3 and FSx channels, checkpoints on the FSx volume, a SIGTERM
stop, then a fresh pod (the operator's restart) that resumes from the shared checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mtgrpo.errors import UserError
from mtgrpo.hyperpod import contract as hc
from mtgrpo.hyperpod.job import run_hyperpod_job
from mtgrpo.hyperpod.platform import detect, read_topology
from tests.conftest import free_port
from tests.hyperpodkit import project, recipe, render

FIXTURES = Path(__file__).resolve().parent / "fixtures"
JOB = "hp-held-out-0123456789"
AGENT = {"GROUP_RANK": "1", "GROUP_WORLD_SIZE": "3", "LOCAL_WORLD_SIZE": "1",
         "MASTER_ADDR": f"{JOB}-pods-0", "MASTER_PORT": "23456", "NNODES": "3",
         "JOB_RESTART_COUNT": "2", hc.JOB_NAME_ENV: JOB}


def test_the_agents_variables_are_the_topology():
    topology = read_topology(AGENT)
    assert (topology.num_nodes, topology.node_rank, topology.master_port, topology.restart) \
        == (3, 1, 23456, 2)
    resources = topology.resource_config()
    assert resources.hosts == (f"{JOB}-pods-0", "node-rank-1", "node-rank-2")
    assert resources.current_host == "node-rank-1" and not resources.is_master
    assert detect(AGENT) and not detect({"PET_NNODES": "2"})


def test_bad_agent_variables_are_all_named():
    env = {**AGENT, "GROUP_RANK": "3", "LOCAL_WORLD_SIZE": "8", "MASTER_PORT": "x"}
    del env["MASTER_ADDR"]
    with pytest.raises(UserError) as err:
        read_topology(env)
    assert [p.key for p in err.value.problems] == ["MASTER_PORT", "MASTER_ADDR",
                                                  "LOCAL_WORLD_SIZE", "GROUP_RANK"]


def rendered_config(tmp_path: Path, **trainer) -> Path:
    """What the rendered ConfigMap mounts at /etc/mtgrpo, for the held-out recipe with every
    channel and the checkpoints on FSx, the volume's /fsx standing for ``tmp_path/fsx``."""
    data = recipe(trainer={**recipe()["trainer"], **trainer},
                  job={"inputs": {"train": "/fsx/qa/train", "eval": "/fsx/qa/eval",
                                  "corpus": "/fsx/corpus", "model": "/fsx/model"}},
                  hyperpod={"gpus_per_node": 0, "efa": 0})
    resources, problems = render(project(tmp_path / "project", data), "hp-held-out")
    assert problems == []
    (config,) = [r for r in resources if r.kind == "ConfigMap"]
    folder = tmp_path / "etc-mtgrpo"
    folder.mkdir()
    for key, text in config.body["data"].items():
        if key == hc.PLATFORM_KEY:
            text = text.replace('"/fsx/', f'"{tmp_path}/fsx/')
        (folder / key).write_text(text)
    return folder


def fsx_volume(tmp_path: Path, model: Path) -> Path:
    import shutil

    fsx = tmp_path / "fsx"
    (fsx / "qa" / "train").mkdir(parents=True)
    (fsx / "qa" / "eval").mkdir(parents=True)
    shutil.copy(FIXTURES / "qa" / "train.jsonl", fsx / "qa" / "train")
    shutil.copy(FIXTURES / "qa" / "eval.jsonl", fsx / "qa" / "eval")
    shutil.copytree(FIXTURES / "corpus", fsx / "corpus")
    shutil.copytree(model, fsx / "model")
    return fsx


def test_a_failure_is_one_line_in_the_termination_message(tmp_path):
    config = rendered_config(tmp_path)  # the FSx channel directories do not exist
    env = {**AGENT, "GROUP_RANK": "0", "GROUP_WORLD_SIZE": "1", hc.CONFIG_DIR_ENV: str(config),
           "MTGRPO_OPT_ML": str(tmp_path / "opt-ml"), "MTGRPO_NUM_GPUS": "1",
           "MTGRPO_TERMINATION_LOG": str(tmp_path / "termination-log")}
    assert run_hyperpod_job(env) != 0
    message = (tmp_path / "termination-log").read_text()
    assert "\n" not in message.strip()
    assert "the channel's directory is missing" in message and "/fsx/" in message
    written = json.loads((tmp_path / "opt-ml" / "input" / "config" /
                          "hyperparameters.json").read_text())
    assert written == json.loads((config / hc.HYPERPARAMETERS_KEY).read_text())


def test_fsx_channels_and_checkpoints_are_linked_in_place(tmp_path, tiny_model_dir):
    fsx = fsx_volume(tmp_path, tiny_model_dir)
    # one GPU for the trainer and vLLM: the launcher refuses it once the layout is in place
    config = rendered_config(tmp_path)
    env = {**AGENT, "GROUP_RANK": "0", "GROUP_WORLD_SIZE": "1", hc.CONFIG_DIR_ENV: str(config),
           "MTGRPO_OPT_ML": str(tmp_path / "opt-ml"), "MTGRPO_NUM_GPUS": "1",
           "MTGRPO_TERMINATION_LOG": str(tmp_path / "termination-log")}
    assert run_hyperpod_job(env) != 0
    assert "vllm needs its own GPU" in (tmp_path / "termination-log").read_text()
    data = tmp_path / "opt-ml" / "input" / "data"
    assert os.readlink(data / "corpus") == str(fsx / "corpus")
    assert os.readlink(data / "model") == str(fsx / "model")
    assert os.readlink(tmp_path / "opt-ml" / "checkpoints") == str(fsx / "checkpoints" / JOB)
    assert (fsx / "checkpoints" / JOB).is_dir()


@pytest.mark.slow
@pytest.mark.vllm
def test_hyperpod_pod_trains_and_a_restart_resumes_from_fsx(tmp_path, tiny_model_dir):
    import boto3

    from tests.moto_s3 import BUCKET, keys, s3_server
    from tests.opt_ml import metrics_steps, sigterm_after_first_step, wait_then_kill
    from tests.test_sagemaker_job import TINY, port_closed

    port = free_port()
    fsx = fsx_volume(tmp_path, tiny_model_dir)
    config = rendered_config(tmp_path)
    # the rendered hyperparameters with the tiny model's; save_steps beyond max_steps: the only
    # checkpoint is the one SIGTERM asks for
    hp = json.loads((config / hc.HYPERPARAMETERS_KEY).read_text())
    hp.update({**TINY, "max_steps": "4", "save_steps": "100", "vllm_gpus": "",
               "vllm_server_url": f"http://127.0.0.1:{port}"})
    (config / hc.HYPERPARAMETERS_KEY).write_text(json.dumps(hp))
    with s3_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket=BUCKET,
                         CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        platform = json.loads((config / hc.PLATFORM_KEY).read_text())
        platform["output_path"] = f"s3://{BUCKET}/out"
        (config / hc.PLATFORM_KEY).write_text(json.dumps(platform))

        def pod(name: str, restart: str) -> subprocess.Popen:
            env = {**os.environ, "GROUP_RANK": "0", "GROUP_WORLD_SIZE": "1",
                   "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                   "MASTER_PORT": str(free_port()), "NNODES": "1",
                   "JOB_RESTART_COUNT": restart, hc.JOB_NAME_ENV: JOB,
                   hc.CONFIG_DIR_ENV: str(config), "AWS_ENDPOINT_URL": endpoint,
                   "MTGRPO_OPT_ML": str(tmp_path / name), "MTGRPO_NUM_GPUS": "0",
                   "MTGRPO_TERMINATION_LOG": str(tmp_path / f"{name}-termination-log"),
                   "VLLM_LOGGING_LEVEL": "WARNING"}
            return subprocess.Popen([sys.executable, *hc.ENTRY], env=env,
                                    stdout=(tmp_path / f"{name}.log").open("wb"),
                                    stderr=subprocess.STDOUT)

        first = tmp_path / "pod-1"
        code, _ = sigterm_after_first_step(pod("pod-1", "0"), lambda: metrics_steps(first),
                                           tmp_path / "pod-1.log", start_timeout=900,
                                           stop_timeout=200)
        first_log = (tmp_path / "pod-1.log").read_text(errors="replace")
        assert code == 143, first_log[-4000:]
        assert "mtgrpo: channel corpus: " in first_log and "(FSx, read in place)" in first_log
        saved = sorted((fsx / "checkpoints" / JOB).glob("checkpoint-*"))
        assert len(saved) == 1, saved  # the checkpoint SIGTERM asked for, on the shared volume
        step = int(saved[0].name.split("-")[1])
        assert not keys(s3, "out/")
        assert port_closed(port)

        second = tmp_path / "pod-2"  # the operator's restart: a new pod, nothing local survives
        code = wait_then_kill(pod("pod-2", "1"), 900)
        second_log = (tmp_path / "pod-2.log").read_text(errors="replace")
        assert code == 0, second_log[-4000:]
        assert "mtgrpo: the operator's restart 1" in second_log
        assert f"resuming from {second / 'checkpoints' / f'checkpoint-{step}'}" in second_log
        assert metrics_steps(second) == [1, 2, 3, 4]
        out = keys(s3, f"out/{JOB}/")
        assert f"out/{JOB}/model/model.safetensors" in out
        assert not (tmp_path / "pod-2-termination-log").exists()
        assert port_closed(port)
