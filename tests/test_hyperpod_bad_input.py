"""Bad input in a backend: hyperpod recipe: one clear line per mistake, naming the file, the key
and what is allowed; nothing rendered."""

from __future__ import annotations

import pytest

from tests.hyperpodkit import RECIPE, project, recipe, render

SOURCE = "recipes/hp-held-out.yaml"
CASES = [
    ("managed spot", recipe(job={"use_spot_instances": True}),
     "job.use_spot_instances: use_spot_instances is a SageMaker-only setting, refused with "
     "backend hyperpod (set it to null to drop a base file's value) (allowed: "
     "hyperpod.max_retries with checkpoints (no managed spot))"),
    ("execution role", recipe(job={"role": "arn:aws:iam::111122223333:role/x"}),
     "job.role: role is a SageMaker-only setting"),
    ("unknown node type", recipe(job={"instance_type": "ml.p9.96xlarge"}),
     "job.instance_type: unknown HyperPod instance type 'ml.p9.96xlarge' (allowed: one of "),
    ("more EFA than the node has", recipe(hyperpod={"efa": 8}),
     "hyperpod.efa: 8 EFA interfaces on ml.p4d.24xlarge, which has 4 (allowed: 0 to 4, or "
     "unset)"),
    ("more GPUs than the node has", recipe(hyperpod={"gpus_per_node": 16}),
     "hyperpod.gpus_per_node: 16 GPUs on ml.p4d.24xlarge, which has 8"),
    ("no GPU left for training", recipe(hyperpod={"gpus_per_node": 1}),
     "trainer.generation_backend: vllm needs its own GPU and this host has only 1 (1 GPUs per "
     "pod on ml.p4d.24xlarge)"),
    ("typo in the section", recipe(hyperpod={"max_retry": 2}),
     "hyperpod.max_retry: unknown key in hyperpod keys; did you mean 'max_retries'?"),
    ("checkpoints outside the FSx mount", recipe(hyperpod={"checkpoint_dir": "/data/ckpt"}),
     "hyperpod.checkpoint_dir: '/data/ckpt' is not a directory under the fsx mount"),
    ("two checkpoint locations", recipe(job={"checkpoint_s3_uri": "s3://amzn-s3-demo-bucket/c"}),
     "hyperpod.checkpoint_dir: both checkpoint_dir and job.checkpoint_s3_uri"),
    ("restarts with nothing to resume from",
     recipe(hyperpod={**RECIPE["hyperpod"], "checkpoint_dir": None}),
     "hyperpod.max_retries: 5 restarts with nowhere to resume from"),
    ("a channel that is neither S3 nor FSx",
     recipe(job={"inputs": {"train": "/data/train"}}),
     "job.inputs.train: '/data/train' is neither an S3 URI nor a path under the fsx mount"),
    ("bad queue name", recipe(hyperpod={"queue": "Team Queue"}),
     "hyperpod.queue: invalid name 'Team Queue'"),
    ("instance type in the node selector",
     recipe(hyperpod={"node_selector": {"node.kubernetes.io/instance-type": "ml.p5.48xlarge"}}),
     "hyperpod.node_selector.node.kubernetes.io/instance-type: the instance type label comes "
     "from job.instance_type"),
    ("bad quantity", recipe(hyperpod={"shm_size": "lots"}),
     "hyperpod.shm_size: invalid quantity 'lots'"),
    ("tuning", recipe(tuning={"objective_metric_name": "eval_reward", "max_jobs": 4,
                              "max_parallel_jobs": 2, "hyperparameter_ranges": {
                                  "learning_rate": {"type": "continuous", "min_value": 1.0e-7,
                                                    "max_value": 1.0e-5}}}),
     "tuning: hyperparameter tuning is not rendered for backend hyperpod"),
    ("a namespace of its own", recipe(hyperpod={"namespace": "kube-system"}),
     "hyperpod.namespace: the namespace is the project's, not a recipe's (allowed: "
     "recipes/_project.yaml namespace"),
    ("kubeflow section", recipe(kubeflow={"num_nodes": 2}),
     "kubeflow: only used with backend: kubeflow"),
]


@pytest.mark.parametrize("data,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_one_line_per_mistake(tmp_path, data, expected):
    resources, problems = render(project(tmp_path, data), "hp-held-out")
    assert resources == []
    lines = [str(p) for p in problems]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{SOURCE}: ") and expected in lines[0], lines[0]


def test_another_teams_queue_is_refused(tmp_path):
    """A LocalQueue is namespaced: task governance's queue of another team's namespace never
    admits the job (caught in what it renders, where the project's namespace is known)."""
    data = recipe(hyperpod={"queue": "hyperpod-ns-vision-localqueue"})
    _, problems = render(project(tmp_path, data), "hp-held-out")
    assert [str(p) for p in problems] == [
        f"{SOURCE}: hyperpod.queue: hyperpod-ns-vision-localqueue is the LocalQueue of "
        "namespace hyperpod-ns-vision, but the job renders into hyperpod-ns-agents (allowed: a "
        "LocalQueue of hyperpod-ns-agents, or recipes/_project.yaml namespace "
        "hyperpod-ns-vision (docs/hyperpod.md, task governance))"]


def test_every_problem_in_one_run(tmp_path):
    data = recipe(job={"use_spot_instances": True, "max_wait": 3600},
                  hyperpod={"max_retry": 2, "shm_size": "lots"})
    _, problems = render(project(tmp_path, data), "hp-held-out")
    assert sorted(p.key for p in problems) == ["hyperpod.max_retry", "hyperpod.shm_size",
                                               "job.max_wait", "job.use_spot_instances"]


def test_a_template_error_is_one_line_with_its_file_and_line(tmp_path):
    root = project(tmp_path, recipe())
    folder = root / "templates" / "hyperpod"
    folder.mkdir(parents=True)
    (folder / "configmap.yaml.j2").write_text("apiVersion: v1\nkind: ConfigMap\n"
                                              "metadata: {{ nope.name | json }}\n")
    _, problems = render(root, "hp-held-out")
    assert [str(p) for p in problems] == [
        "templates/hyperpod/configmap.yaml.j2: line 3: template failed: 'nope' is undefined "
        "(allowed: variables listed in docs/recipes.md)"]
