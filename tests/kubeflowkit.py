"""A small Kubeflow project for the render and bad-input tests: one valid recipe to vary."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

IMAGE = ("111122223333.dkr.ecr.us-west-2.amazonaws.com/mtgrpo-trainer@sha256:"
         + "0" * 64)
RECIPE = {
    "name": "kf-train",
    "backend": "kubeflow",
    "trainer": {"model_name_or_path": "Qwen/Qwen3-1.7B", "num_generations": 8,
                "per_device_train_batch_size": 2, "gradient_accumulation_steps": 4,
                "deepspeed_stage": 3},
    "job": {"image_uri": IMAGE, "region": "us-west-2",
            "output_path": "s3://amzn-s3-demo-bucket/out",
            "checkpoint_s3_uri": "s3://amzn-s3-demo-bucket/ckpt",
            "inputs": {"train": "s3://amzn-s3-demo-bucket/data/train",
                       "corpus": "s3://amzn-s3-demo-bucket/data/corpus"},
            "environment": {"NCCL_DEBUG": "WARN"}, "tags": {"team": "agents"}},
    "kubeflow": {"num_nodes": 2, "gpus_per_node": 4, "shm_size": "32Gi",
                 "service_account": "mtgrpo-trainer",
                 "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                  "effect": "NoSchedule"}],
                 "node_selector": {"node.kubernetes.io/instance-type": "g5.12xlarge"}},
}
TUNING = {"objective_metric_name": "eval_reward", "max_jobs": 6, "max_parallel_jobs": 2,
          "strategy": "Random", "early_stopping_type": "Auto",
          "hyperparameter_ranges": {
              "learning_rate": {"type": "continuous", "min_value": 1.0e-7,
                                "max_value": 1.0e-5, "scaling_type": "Logarithmic"},
              "tool_format": {"type": "categorical", "values": ["xml", "qwen"]}}}


def recipe(**changes) -> dict:
    """The valid recipe with some top-level sections replaced or merged (dicts merge)."""
    out = copy.deepcopy(RECIPE)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def project(root: Path, *recipes: dict) -> Path:
    (root / "recipes").mkdir(parents=True)
    (root / "recipes" / "_project.yaml").write_text("namespace: ml-jobs\n")
    for data in recipes:
        (root / "recipes" / f"{data['name']}.yaml").write_text(yaml.safe_dump(data))
    return root
