"""Bad input in the backend: kubeflow section: one clear line per mistake, nothing written."""

from __future__ import annotations

import pytest

from mtgrpo.errors import UserError
from mtgrpo.render import render_all
from tests.kubeflowkit import TUNING, project, recipe
from tests.renderkit import snapshot

CASES = [
    ("unknown backend", recipe(backend="k8s"),
     "backend: invalid value 'k8s' (allowed: one of sagemaker, kubeflow, hyperpod)"),
    ("kubeflow section on a SageMaker recipe",
     {**recipe(backend="sagemaker"), "job": {**recipe()["job"], "role":
      "arn:aws:iam::111122223333:role/x", "instance_type": "ml.g5.2xlarge"}},
     "kubeflow: only used with backend: kubeflow"),
    ("managed spot", recipe(job={"use_spot_instances": True}),
     "job.use_spot_instances: use_spot_instances is a SageMaker-only setting, refused with "
     "backend kubeflow"),
    ("instance type", recipe(job={"instance_type": "ml.p4d.24xlarge"}),
     "job.instance_type: instance_type is a SageMaker-only setting"),
    ("KMS key", recipe(job={"volume_kms_key": "arn:aws:kms:us-west-2:111122223333:key/x"}),
     "job.volume_kms_key: volume_kms_key is a SageMaker-only setting"),
    ("network isolation", recipe(job={"enable_network_isolation": True}),
     "(allowed: a NetworkPolicy of your own)"),
    ("channel input mode", recipe(job={"inputs": {
        "train": {"s3_data": "s3://amzn-s3-demo-bucket/t", "input_mode": "FastFile"},
        "corpus": "s3://amzn-s3-demo-bucket/c"}}),
     "job.inputs.train.input_mode: input_mode is a SageMaker-only channel option"),
    ("typo in the section", recipe(kubeflow={"nodes": 2}),
     "kubeflow.nodes: unknown key in kubeflow keys; did you mean 'num_nodes'?"),
    ("no GPU left for training", recipe(kubeflow={"gpus_per_node": 1}),
     "kubeflow.gpus_per_node: 1 GPUs per node leave none for training after 1 for vLLM"),
    ("vLLM GPUs disagree", recipe(trainer={**recipe()["trainer"], "vllm_gpus": "3"},
                                  kubeflow={"vllm_gpus": 2}),
     "kubeflow.vllm_gpus: 2 differs from trainer.vllm_gpus '3' (1 GPUs)"),
    ("bad quantity", recipe(kubeflow={"shm_size": "lots"}),
     "kubeflow.shm_size: invalid quantity 'lots'"),
    ("bad toleration", recipe(kubeflow={"tolerations": [{"key": "gpu", "effect": "Sometimes"}]}),
     "kubeflow.tolerations[0].effect: invalid value 'Sometimes'"),
    ("unknown trainer version", recipe(kubeflow={"trainer_version": "2.2"}),
     "kubeflow.trainer_version: invalid value '2.2' (allowed: one of 2.3, 2.4)"),
    ("name starting with a digit", recipe(name="2node-kf"),
     "name: '2node-kf' starts with a digit; Kubeflow object names must start with a letter"),
    ("PET_ variable", recipe(job={"environment": {"PET_NNODES": "4"}}),
     "job.environment.PET_NNODES: the torch runtime sets PET_* itself"),
    ("reverse logarithmic", recipe(tuning={**TUNING, "hyperparameter_ranges": {
        "learning_rate": {"type": "continuous", "min_value": 0.1, "max_value": 0.9,
                          "scaling_type": "ReverseLogarithmic"}}}),
     "tuning.hyperparameter_ranges.learning_rate.scaling_type: ReverseLogarithmic has no "
     "Katib equivalent"),
    ("hyperband", recipe(tuning={**TUNING, "strategy": "Hyperband", "early_stopping_type": "Off"}),
     "tuning.strategy: Hyperband cannot be mapped"),
    ("linear range under Bayesian", recipe(tuning={**TUNING, "strategy": "Bayesian",
                                                   "hyperparameter_ranges": {
        "learning_rate": {"type": "continuous", "min_value": 1e-7, "max_value": 1e-5,
                          "scaling_type": "Linear"}}}),
     "learning_rate.scaling_type: Linear cannot be honoured with strategy Bayesian"),
    ("bad label value", recipe(job={"tags": {"team": "research: agents"}}),
     "job.tags.team: invalid label value 'research: agents'"),
    ("batch the world cannot split", recipe(trainer={**recipe()["trainer"],
                                                     "num_generations": 7}),
     "trainer.num_generations: 7 does not divide"),
]


@pytest.mark.parametrize("data,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_nothing_is_written(tmp_path, data, expected):
    root = project(tmp_path, data)
    before = snapshot(root)
    with pytest.raises(UserError) as excinfo:
        render_all(root, write=True)
    lines = excinfo.value.lines()
    assert len(lines) == 1, lines
    assert expected in lines[0] and "\n" not in lines[0]
    assert lines[0].startswith(f"recipes/{data['name']}.yaml: ")
    assert snapshot(root) == before


def test_the_valid_recipe_renders(tmp_path):
    root = project(tmp_path, recipe(), recipe(name="kf-tune", tuning=TUNING))
    kinds = sorted(r.kind for r in render_all(root, write=True).resources)
    assert kinds == ["ConfigMap", "ConfigMap", "Experiment", "TrainJob", "TrainingRuntime",
                     "TrainingRuntime"]
