"""backend: kubeflow rendering: what each object holds, names, the Katib mapping, the metric
line reaching Katib's collector, `kubectl kustomize` building both backends, and validation
catching what the API server, the CEL rules and Katib's webhook would refuse."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess

import pytest
import yaml

from mtgrpo.contract import METRICS, TrainerConfig, format_metric_line
from mtgrpo.kubeflow import contract as kc
from mtgrpo.recipes import load_recipe
from mtgrpo.recipes.yamlfile import Loader
from mtgrpo.render import load_settings, render_all
from mtgrpo.kubeflow.render import METRICS_FORMAT, build_kubeflow_resources
from mtgrpo.kubeflow.validate import (CEL_RULES, cel_rules, check_experiment,
                                      check_trainer_object, is_transition_rule,
                                      metrics_format_groups)
from tests.kubeflowkit import TUNING, project, recipe
from tests.renderkit import CRDS, REPO

KF_CRDS = CRDS / "kubeflow"


def _render(tmp_path, *recipes):
    root = project(tmp_path, *recipes)
    return {(r.kind, r.recipe): r for r in render_all(root, write=False).resources}


def _pod(runtime: dict) -> dict:
    (job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    return job["template"]["spec"]["template"]["spec"]


def test_training_objects(tmp_path):
    out = _render(tmp_path, recipe())
    config, runtime, job = (out[(k, "kf-train")] for k in ("ConfigMap", "TrainingRuntime",
                                                          "TrainJob"))
    assert config.name == runtime.name == job.name and job.name.startswith("kf-train-")
    spec = job.body["spec"]
    assert spec["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "TrainingRuntime",
                                  "name": job.name}
    assert spec["activeDeadlineSeconds"] == 86400  # job.max_run's default
    # 4 GPUs per pod, the last one for vLLM: 3 training ranks per pod
    assert spec["trainer"] == {"numNodes": 2, "numProcPerNode": 3}
    assert runtime.body["spec"]["mlPolicy"] == {"numNodes": 2, "torch": {}}
    pod = _pod(runtime.body)
    (node,) = pod["containers"]
    assert node["name"] == "node" and node["command"] == list(kc.COMMAND)
    assert node["resources"]["limits"]["nvidia.com/gpu"] == "4"
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    mounts = {m["mountPath"]: m["name"] for m in node["volumeMounts"]}
    # /dev/shm, the ConfigMap, and writable emptyDirs under the read-only root
    assert mounts == {"/dev/shm": "dshm", kc.CONFIG_DIR: "mtgrpo-config", "/opt/ml": "opt-ml",
                      "/tmp": "tmp", "/home/mtgrpo": "home"}
    assert next(v for v in pod["volumes"] if v["name"] == "mtgrpo-config")["configMap"] == {
        "name": job.name}
    assert node["terminationMessagePath"] == kc.TERMINATION_LOG
    assert pod["serviceAccountName"] == "mtgrpo-trainer" and pod["restartPolicy"] == "Never"
    assert pod["tolerations"][0]["effect"] == "NoSchedule"
    env = {e["name"]: e for e in node["env"]}
    assert env["NCCL_DEBUG"]["value"] == "WARN" and env["AWS_REGION"]["value"] == "us-west-2"
    assert env[kc.JOB_NAME_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == \
        f"metadata.labels['{kc.JOB_NAME_LABEL}']"
    assert runtime.body["spec"]["template"]["spec"]["failurePolicy"] == {"maxRestarts": 2}
    # the ConfigMap holds the hyperparameters the image parses, vllm_gpus made explicit
    data = config.body["data"]
    hp = json.loads(data[kc.HYPERPARAMETERS_KEY])
    parsed = TrainerConfig.from_hyperparameters(hp, source="x")
    assert parsed.vllm_gpus == "3" and parsed.deepspeed_stage == 3
    platform = json.loads(data[kc.PLATFORM_KEY])
    assert platform["channels"] == {"corpus": "s3://amzn-s3-demo-bucket/data/corpus",
                                    "train": "s3://amzn-s3-demo-bucket/data/train"}
    assert platform["checkpoint_s3_uri"] == "s3://amzn-s3-demo-bucket/ckpt"
    assert config.body["immutable"] is True
    for resource in (config, runtime, job):
        meta = resource.body["metadata"]
        assert meta["namespace"] == "ml-jobs" and meta["labels"]["team"] == "agents"
        assert meta["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false"


def test_names_are_content_hashes_within_kubeflow_limits(tmp_path):
    long = "k" + "-very-long-recipe-name" * 2
    a = _render(tmp_path / "a", recipe(name=long))
    b = _render(tmp_path / "b", recipe(name=long, kubeflow={"shm_size": "8Gi"}))
    c = _render(tmp_path / "c", recipe(name=long, description="reviewers only"))
    name_a, name_b = a[("TrainJob", long)].name, b[("TrainJob", long)].name
    assert name_a != name_b  # a runtime change renames the TrainJob too
    assert c[("TrainJob", long)].name == name_a  # nothing that runs changed
    # JobSet pod names `<name>-node-0-<i>-xxxxx` must fit 63 characters
    assert len(name_a) == 48 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name_a)
    t = _render(tmp_path / "t", recipe(name=long, tuning=TUNING))
    assert len(t[("Experiment", long)].name) == 39  # a trial is `<experiment>-<8 chars>`
    (job,) = t[("TrainingRuntime", long)].body["spec"]["template"]["spec"]["replicatedJobs"]
    assert len(job["name"]) <= 20  # Trainer 2.4


def test_experiment_maps_the_tuning_section(tmp_path):
    out = _render(tmp_path, recipe(tuning={**TUNING, "strategy": "Bayesian"}))
    exp = out[("Experiment", "kf-train")]
    spec = exp.body["spec"]
    assert spec["objective"] == {"type": "maximize", "objectiveMetricName": "eval_reward",
                                 "metricStrategies": [{"name": "eval_reward",
                                                       "value": "latest"}]}
    assert spec["algorithm"] == {"algorithmName": "bayesianoptimization"}
    assert spec["earlyStopping"] == {"algorithmName": "medianstop"}
    assert (spec["parallelTrialCount"], spec["maxTrialCount"]) == (2, 6)
    assert spec["parameters"] == [
        {"name": "learning_rate", "parameterType": "double",
         "feasibleSpace": {"min": "1e-07", "max": "1e-05", "distribution": "logUniform"}},
        {"name": "tool_format", "parameterType": "categorical",
         "feasibleSpace": {"list": ["xml", "qwen"]}}]
    template = spec["trialTemplate"]
    assert template["primaryContainerName"] == "node"
    trial = template["trialSpec"]
    assert trial["kind"] == "TrainJob" and "name" not in trial["metadata"]
    assert trial["spec"]["runtimeRef"]["name"] == exp.name
    assert trial["spec"]["trainer"]["env"] == [
        {"name": "MTGRPO_HP_learning_rate", "value": "${trialParameters.learning_rate}"},
        {"name": "MTGRPO_HP_tool_format", "value": "${trialParameters.tool_format}"}]
    # tuned values are not in the ConfigMap; everything else is
    hp = json.loads(out[("ConfigMap", "kf-train")].body["data"][kc.HYPERPARAMETERS_KEY])
    assert "learning_rate" not in hp and "tool_format" not in hp and hp["num_generations"] == "8"
    # no plain TrainJob unless tuning.render_training_job
    assert ("TrainJob", "kf-train") not in out


def test_katib_collector_reads_the_trainer_metric_line():
    values = {name: float(i) - 0.75 for i, name in enumerate(sorted(METRICS))}
    values["step"] = 12
    values["learning_rate"] = 1e-06
    line = format_metric_line(values)
    found = dict(re.findall(METRICS_FORMAT, line))  # Katib keeps group 1 = name, 2 = value
    assert set(found) == set(METRICS)
    for name, value in values.items():
        assert float(found[name]) == pytest.approx(value, rel=1e-5)
    assert metrics_format_groups(METRICS_FORMAT) == 2


def test_every_cel_rule_without_old_object_is_evaluated():
    rules = {rule for _, _, rule in cel_rules(KF_CRDS)}
    creatable = {r for r in rules if not is_transition_rule(r)}
    assert creatable and creatable <= set(CEL_RULES), creatable - set(CEL_RULES)
    immutable = {path for kind, path, rule in cel_rules(KF_CRDS)
                 if kind == "TrainJob" and rule == "self == oldSelf"}
    assert {".spec.runtimeRef", ".spec.trainer", ".spec.activeDeadlineSeconds"} <= {
        "." + p for p in immutable}


def _shipped(kind: str) -> dict:
    result = render_all(REPO, write=False)
    return copy.deepcopy(next(r.body for r in result.resources if r.kind == kind))


def _keys(problems) -> list[str]:
    return sorted(p.key for p in problems)


def test_validation_refuses_what_the_cluster_would():
    job = _shipped("TrainJob")
    assert check_trainer_object(job, source="x", crd_dir=KF_CRDS) == []
    bad = copy.deepcopy(job)
    bad["spec"]["trainer"]["numProcsPerNode"] = 3  # a typo: strict field validation
    assert _keys(check_trainer_object(bad, source="x", crd_dir=KF_CRDS)) == [
        "spec.trainer.numProcsPerNode"]
    bad = copy.deepcopy(job)
    bad["metadata"]["name"] = "9" + job["metadata"]["name"][1:]  # CEL: starts with a letter
    (problem,) = check_trainer_object(bad, source="x", crd_dir=KF_CRDS)
    assert problem.message == "metadata.name must match RFC 1035 DNS label format"
    bad["metadata"]["name"] = "a" * 49  # JobSet's bound
    assert "JobSet" in check_trainer_object(bad, source="x", crd_dir=KF_CRDS)[0].message
    bad = copy.deepcopy(job)
    bad["spec"]["trainer"]["env"] = [{"name": "PET_NNODES", "value": "2"}]
    assert _keys(check_trainer_object(bad, source="x", crd_dir=KF_CRDS)) == [
        "spec.trainer.env[0].name"]

    runtime = _shipped("TrainingRuntime")
    assert check_trainer_object(runtime, source="x", crd_dir=KF_CRDS) == []
    bad = copy.deepcopy(runtime)
    bad["spec"]["template"]["spec"]["replicatedJobs"][0]["name"] = "n" * 21
    assert "20 characters" in check_trainer_object(bad, source="x", crd_dir=KF_CRDS)[0].allowed
    bad = copy.deepcopy(runtime)
    bad["spec"]["mlPolicy"]["mpi"] = {}  # CEL: one policy only
    assert [p.message for p in check_trainer_object(bad, source="x", crd_dir=KF_CRDS)] == [
        "Only one of the policy can be configured"]

    exp = _shipped("Experiment")
    assert check_experiment(exp, source="x", crd_dir=KF_CRDS) == []
    bad = copy.deepcopy(exp)
    bad["spec"]["objective"]["metricStrategy"] = []  # unknown field (Katib's OpenAPI)
    assert _keys(check_experiment(bad, source="x", crd_dir=KF_CRDS)) == [
        "spec.objective.metricStrategy"]
    bad = copy.deepcopy(exp)
    bad["spec"]["metricsCollectorSpec"]["source"]["filter"]["metricsFormat"] = [r"x=(\d+)"]
    assert "two top-level" in check_experiment(bad, source="x", crd_dir=KF_CRDS)[0].message
    bad = copy.deepcopy(exp)
    bad["spec"]["trialTemplate"]["trialParameters"].pop()
    assert any("not declared" in p.message
               for p in check_experiment(bad, source="x", crd_dir=KF_CRDS))
    bad = copy.deepcopy(exp)
    bad["spec"]["trialTemplate"]["trialSpec"]["spec"]["trainer"]["numNodez"] = 1
    assert _keys(check_experiment(bad, source="x", crd_dir=KF_CRDS)) == [
        "spec.trialTemplate.trialSpec.spec.trainer.numNodez"]
    bad = copy.deepcopy(exp)
    bad["spec"]["maxFailedTrialCount"] = 99
    assert _keys(check_experiment(bad, source="x", crd_dir=KF_CRDS)) == [
        "spec.maxFailedTrialCount"]


def test_the_same_recipe_moves_between_backends_with_one_key(tmp_path):
    """A SageMaker recipe's trainer: section renders unchanged into the ConfigMap."""
    sm = load_recipe(REPO / "recipes" / "qwen3-1-7b-2node.yaml", root=REPO)
    kf = load_recipe(REPO / "recipes" / "qwen3-1-7b-kubeflow.yaml", root=REPO)
    (config,) = [r for r in build_kubeflow_resources(kf, load_settings(REPO))
                 if r.kind == "ConfigMap"]
    hp = json.loads(config.body["data"][kc.HYPERPARAMETERS_KEY])
    assert hp == kf.trainer.replace(vllm_gpus="3").to_hyperparameters()
    assert set(hp) == set(sm.trainer.to_hyperparameters())


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_kustomize_builds_both_backends():
    built = subprocess.run(["kubectl", "kustomize", str(REPO)], check=True,
                           capture_output=True, text=True).stdout
    docs = [d for d in yaml.load_all(built, Loader=Loader) if d]
    kinds = {d["kind"] for d in docs}
    assert kinds == {"TrainingJob", "HyperParameterTuningJob", "ConfigMap", "TrainingRuntime",
                     "TrainJob", "Experiment", "HyperPodPyTorchJob"}
    expected = {(r.kind, r.name): r.body for r in render_all(REPO, write=False).resources}
    assert {(d["kind"], d["metadata"]["name"]): d for d in docs} == expected


def test_sagemaker_only_paths_refuse_kubeflow_recipes():
    from mtgrpo.errors import UserError
    from mtgrpo.operate.status import _recipe_jobs
    from mtgrpo.render import training_job_for

    path = REPO / "recipes" / "qwen3-1-7b-kubeflow.yaml"
    recipe = load_recipe(path, root=REPO)
    with pytest.raises(UserError, match="backend: a training job from a tuning job's best "
                                        "values is not available for backend kubeflow"):
        training_job_for(recipe, load_settings(REPO), {})
    with pytest.raises(UserError, match="this reads ACK SageMaker jobs; the recipe renders "
                                        "ConfigMap, TrainingRuntime, TrainJob"):
        _recipe_jobs(str(path))


@pytest.mark.parametrize("path", sorted(p for p in (REPO / "manifests").glob("*/*-*.yaml") if p.name
                                        .endswith(("-trainjob.yaml", "-trainingruntime.yaml",
                                                   "-experiment.yaml"))),
                         ids=lambda p: p.name)
def test_committed_kubeflow_manifests_are_valid(path):
    body = yaml.load(path.read_text(), Loader=Loader)
    check = check_experiment if body["kind"] == "Experiment" else check_trainer_object
    assert check(body, source=str(path), crd_dir=KF_CRDS) == []


def test_diff_pairs_the_replaced_kubeflow_objects(tmp_path):
    from mtgrpo.gitops import compare
    from tests.renderkit import copy_project

    root = copy_project(tmp_path)
    path = root / "recipes" / "qwen3-1-7b-kubeflow.yaml"
    path.write_text(path.read_text().replace("shm_size: 32Gi", "shm_size: 48Gi"))
    drift = compare(root, render_all(root, write=False).files)
    replaced = sorted((old.kind, old.name != new.name) for old, new in drift.replaced)
    assert replaced == [("ConfigMap", True), ("TrainJob", True), ("TrainingRuntime", True)]
    assert not drift.added and not drift.removed
