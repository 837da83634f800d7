"""The tune-then-train Kubeflow pipeline: deterministic compile, load-back, and a local run.

The local run is kfp's own local executor (``kfp.local`` with the subprocess runner): each
component runs as ``python -m kfp.dsl.executor_main`` in a child process, imports mtgrpo and
talks to the fake Kubernetes API server, which plays the ACK controller.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from fakekube import best_trial, fake  # noqa: F401
from mtgrpo.cli import main

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "qwen2-5-1-5b-tune.yaml"
TUNED = {"learning_rate": "3.5e-06", "per_device_train_batch_size": "2"}


def compile_cli(tmp_path: Path, name: str, *extra: str) -> bytes:
    out = tmp_path / name
    assert main(["pipeline", str(RECIPE), "--output", str(out), *extra]) == 0
    return out.read_bytes()


def test_compiles_to_the_same_bytes_and_loads_back(tmp_path):
    from kfp import components

    first = compile_cli(tmp_path, "a.yaml")
    # Again in a fresh interpreter with another hash seed: no set or dict-order luck.
    import subprocess
    env = dict(os.environ, PYTHONHASHSEED="12345")
    subprocess.run([sys.executable, "-m", "mtgrpo.cli", "pipeline", str(RECIPE), "--output",
                    str(tmp_path / "b.yaml")], check=True, env=env, cwd=tmp_path)
    assert (tmp_path / "b.yaml").read_bytes() == first
    loaded = components.load_component_from_file(str(tmp_path / "a.yaml"))
    assert loaded.name == "qwen2-5-1-5b-tune-tune-then-train"
    spec = yaml.safe_load(first)
    tasks = spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == ["train-step", "tune-step"]
    assert tasks["train-step"]["dependentTasks"] == ["tune-step"]
    assert spec["root"]["dag"]["outputs"]["parameters"]["Output"]["valueFromParameter"] == {
        "outputParameterKey": "model_artifact", "producerSubtask": "train-step"}
    # The tuning job in the pipeline is the rendered manifest, with deletion-policy delete.
    tuning = json.loads(tasks["tune-step"]["inputs"]["parameters"]["tuning_job"]
                        ["runtimeValue"]["constant"])
    rendered = yaml.safe_load(next((REPO / "manifests").glob(
        "sagemaker/qwen2-5-1-5b-tune-*-hyperparametertuningjob.yaml")).read_text())
    assert tuning["spec"] == rendered["spec"]
    assert tuning["metadata"]["name"] == rendered["metadata"]["name"]
    assert tuning["metadata"]["annotations"]["services.k8s.aws/deletion-policy"] == "delete"


def test_image_and_packages_options(tmp_path):
    text = compile_cli(tmp_path, "p.yaml", "--image", "python:3.11-slim",
                       "--pip", "mtgrpo[pipelines]==0.1.0").decode()
    assert "image: python:3.11-slim" in text
    assert "mtgrpo[pipelines]==0.1.0" in text and "kfp==2.17.3" in text
    plain = compile_cli(tmp_path, "q.yaml").decode()
    assert "pip install" not in plain  # the trainer image has mtgrpo and kfp already


def test_training_job_from_the_bundle_is_what_render_makes():
    """The train step renders at run time exactly what `training_job_for` renders."""
    from mtgrpo.pipelines.pipeline import pipeline_inputs
    from mtgrpo.pipelines.steps import training_job_from_bundle
    from mtgrpo.recipes import load_recipe
    from mtgrpo.render import load_settings, training_job_for

    _, _, _, bundle = pipeline_inputs(RECIPE)
    built = training_job_from_bundle(json.loads(json.dumps(bundle)), TUNED)
    expected = training_job_for(load_recipe(RECIPE), load_settings(REPO), TUNED).body
    assert built["metadata"]["name"] == expected["metadata"]["name"]
    assert built["spec"] == expected["spec"]
    assert built["spec"]["hyperParameters"]["learning_rate"] == "3.5e-06"
    assert built["metadata"]["annotations"]["services.k8s.aws/deletion-policy"] == "delete"
    other = training_job_from_bundle(bundle, {**TUNED, "learning_rate": "1e-06"})
    assert other["metadata"]["name"] != built["metadata"]["name"]


def test_not_a_tuning_recipe(tmp_path, capsys):
    recipe = REPO / "recipes" / "qwen2-5-1-5b-g5.yaml"
    assert main(["pipeline", str(recipe), "--output", str(tmp_path / "x.yaml")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert "tuning: the pipeline needs a tuning recipe" in err
    assert not (tmp_path / "x.yaml").exists()


def controller(fake, model_uri_box):
    """The ACK controller and SageMaker, as the fake plays them for the pipeline run."""
    def on_tuning(server, obj):
        server.wait_watching()  # the step is waiting: now the job runs and finishes
        name = obj["metadata"]["name"]
        server.set_status("HyperParameterTuningJob", name,
                          {"hyperParameterTuningJobStatus": "InProgress"}, obj["metadata"]["namespace"])
        server.set_status("HyperParameterTuningJob", name, {
            "hyperParameterTuningJobStatus": "Completed",
            **best_trial(f"{name}-004-1a2b3c4d", TUNED, 0.58)}, obj["metadata"]["namespace"])

    def on_training(server, obj):
        server.wait_watching()
        name = obj["metadata"]["name"]
        uri = f"{obj['spec']['outputDataConfig']['s3OutputPath']}/{name}/output/model.tar.gz"
        model_uri_box.append((obj, uri))
        server.set_status("TrainingJob", name, {
            "trainingJobStatus": "Completed", "secondaryStatus": "Completed",
            "modelArtifacts": {"s3ModelArtifacts": uri}}, obj["metadata"]["namespace"])
    fake.on_create["hyperparametertuningjobs"] = on_tuning
    fake.on_create["trainingjobs"] = on_training


@pytest.mark.filterwarnings("ignore:Task:UserWarning", "ignore:You may be:RuntimeWarning")
def test_pipeline_runs_locally_against_the_fake_cluster(fake, tmp_path, monkeypatch):
    # The docker SDK is not installed; the repo's docker/ folder (the trainer image) must not
    # pass for it when the repo root is on sys.path (`python -m pytest`).
    monkeypatch.setitem(sys.modules, "docker", None)
    from kfp import local

    from mtgrpo.pipelines.pipeline import build_pipeline
    from mtgrpo.recipes import load_recipe
    from mtgrpo.render import load_settings, training_job_for

    created = []
    controller(fake, created)
    monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    run = build_pipeline(RECIPE)()
    expected = training_job_for(load_recipe(RECIPE), load_settings(REPO), TUNED).body
    assert len(created) == 1
    body, uri = created[0]
    assert run.output == uri
    assert body["metadata"]["name"] == expected["metadata"]["name"]
    assert body["spec"]["hyperParameters"] == expected["spec"]["hyperParameters"]
    # Everything the steps did, in order, as the API server saw it.
    assert [r for r in fake.requests if r[0] == "create"] == [
        ("create", "hyperparametertuningjobs"), ("create", "trainingjobs")]
    assert fake.count("delete", "trainingjobs") == 0
    assert all(allowed(verb, plural) for verb, plural in fake.requests)


def test_failed_tuning_fails_the_step(fake, monkeypatch):
    from mtgrpo.pipelines.pipeline import pipeline_inputs
    from mtgrpo.pipelines.steps import StepFailed, tune

    def fail(server, obj):
        server.set_status("HyperParameterTuningJob", obj["metadata"]["name"], {
            "hyperParameterTuningJobStatus": "Failed",
            "failureReason": "All training jobs failed"}, obj["metadata"]["namespace"])
    fake.on_create["hyperparametertuningjobs"] = fail
    monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig))
    _, _, tuning_body, _ = pipeline_inputs(RECIPE)
    with pytest.raises(StepFailed, match="Failed: All training jobs failed"):
        tune(tuning_body, timeout_s=30)


# -- RBAC --------------------------------------------------------------------------------------

def allowed(verb: str, plural: str) -> bool:
    from mtgrpo.pipelines.rbac import rbac_documents
    role = next(d for d in rbac_documents("ns", "sa", "kubeflow") if d["kind"] == "Role")
    return any(plural in rule["resources"] and verb in rule["verbs"] and
               "sagemaker.services.k8s.aws" in rule["apiGroups"] for rule in role["rules"])


def test_role_covers_every_call_the_steps_make(fake, monkeypatch):
    """Run both steps (and a cancellation's delete) and check each request against the Role."""
    from mtgrpo.operate import connect
    from mtgrpo.pipelines.pipeline import pipeline_inputs
    from mtgrpo.pipelines.steps import train, tune

    controller(fake, [])
    monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig))
    _, _, tuning_body, bundle = pipeline_inputs(RECIPE)
    tuned = tune(tuning_body, timeout_s=30)
    train(bundle, json.loads(tuned["hyperparameters"]), timeout_s=30)
    connect(namespace="mtgrpo").delete("TrainingJob", "gone")
    verbs = set(fake.requests)
    assert {v for v, _ in verbs} == {"create", "list", "watch", "delete"}
    assert all(allowed(verb, plural) for verb, plural in verbs), verbs
    assert not allowed("patch", "trainingjobs")  # nothing more than needed


def test_committed_rbac_is_current_and_builds_with_kustomize(tmp_path):
    import shutil
    import subprocess

    out = tmp_path / "rbac.yaml"
    assert main(["pipeline", "--rbac", "--root", str(REPO), "--output", str(out)]) == 0
    committed = REPO / "deploy" / "pipelines" / "rbac.yaml"
    assert out.read_text() == committed.read_text(), \
        "stale: run `mtgrpo pipeline --rbac --output deploy/pipelines/rbac.yaml`"
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed")
    built = subprocess.run(["kubectl", "kustomize", str(REPO / "deploy" / "pipelines")],
                           capture_output=True, text=True, check=True).stdout
    kinds = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(built)]
    assert kinds == [("Role", "mtgrpo-pipeline-sagemaker-jobs"),
                     ("RoleBinding", "mtgrpo-pipeline-sagemaker-jobs-pipeline-runner")]


def test_rbac_with_service_account(tmp_path, capsys):
    assert main(["pipeline", str(RECIPE), "--rbac", "--service-account", "default-editor",
                 "--service-account-namespace", "team-a", "--create-service-account"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["ServiceAccount", "Role", "RoleBinding"]
    assert docs[0]["metadata"] == {"name": "default-editor", "namespace": "team-a",
                                   "labels": docs[0]["metadata"]["labels"]}
    assert docs[2]["subjects"] == [{"kind": "ServiceAccount", "name": "default-editor",
                                    "namespace": "team-a"}]
    assert docs[1]["metadata"]["namespace"] == "mtgrpo"  # the jobs' namespace


def test_bad_tuned_value_fails_the_train_step_before_creating(fake, monkeypatch):
    from mtgrpo.pipelines.pipeline import pipeline_inputs
    from mtgrpo.pipelines.steps import StepFailed, train

    monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig))
    _, _, _, bundle = pipeline_inputs(RECIPE)
    with pytest.raises(StepFailed, match=r"trainer\.per_device_train_batch_size"):
        train(bundle, {**TUNED, "per_device_train_batch_size": "two"}, timeout_s=5)
    assert fake.requests == []  # nothing was created
