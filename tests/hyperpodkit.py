"""A small HyperPod project for the render and bad-input tests: one valid recipe to vary, and
the recipe read, ruled, rendered and checked as `mtgrpo render` does it."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from mtgrpo.errors import UserError

IMAGE = ("111122223333.dkr.ecr.us-west-2.amazonaws.com/mtgrpo-trainer@sha256:" + "0" * 64)
# Held out from the shipped recipe: another node type, three nodes, two GPUs of each left
# idle, fewer EFA interfaces than the node has, FSx for data and checkpoints, a toleration; the
# project is a task-governance team's (namespace hyperpod-ns-agents, its LocalQueue).
NAMESPACE = "hyperpod-ns-agents"
RECIPE = {
    "name": "hp-held-out",
    "backend": "hyperpod",
    "trainer": {"model_name_or_path": "Qwen/Qwen3-1.7B", "num_generations": 8,
                "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
                "deepspeed_stage": 3},
    "job": {"image_uri": IMAGE, "region": "us-east-1", "instance_type": "ml.p4d.24xlarge",
            "instance_count": 3, "output_path": "s3://amzn-s3-demo-bucket/out",
            "inputs": {"train": "s3://amzn-s3-demo-bucket/data/train",
                       "corpus": "/fsx/corpus/wiki", "model": "/fsx/models/Qwen3-1.7B"},
            "environment": {"NCCL_DEBUG": "WARN"}, "tags": {"team": "agents"}},
    "hyperpod": {"gpus_per_node": 6, "efa": 2,
                 "queue": "hyperpod-ns-agents-localqueue", "priority": "inference-priority",
                 "service_account": "mtgrpo-trainer", "max_retries": 5,
                 "deep_health_check_passed_only": True,
                 "node_selector": {"team": "agents"},
                 "tolerations": [{"key": "sagemaker.amazonaws.com/node-health-status",
                                  "operator": "Equal", "value": "Unschedulable",
                                  "effect": "NoSchedule"}],
                 "fsx": {"claim_name": "fsx-claim"}, "checkpoint_dir": "/fsx/checkpoints"},
}


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
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    (root / "recipes" / "_project.yaml").write_text(f"namespace: {NAMESPACE}\n")
    for data in recipes:
        (root / "recipes" / f"{data['name']}.yaml").write_text(yaml.safe_dump(data))
    return root


def render(root: Path, name: str):
    """(resources, problems) of one recipe of the project, as `mtgrpo render` reaches them:
    schema, rules, render, checks of what it rendered."""
    from mtgrpo.recipes import read_recipe
    from mtgrpo.hyperpod.render import build_hyperpod_resources
    from mtgrpo.hyperpod.validate import check_recipe, check_resources
    from mtgrpo.render.settings import load_settings

    data = read_recipe(root / "recipes" / f"{name}.yaml", root=root)
    if data.problems:
        return [], list(data.problems)
    problems = check_recipe(data)
    if problems:
        return [], problems
    try:
        resources = build_hyperpod_resources(data, load_settings(root))
    except UserError as err:
        return [], list(err.problems)
    return resources, check_resources(resources, data,
                                      namespace=load_settings(root).namespace)
