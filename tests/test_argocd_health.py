"""Argo CD health checks, run in a real Lua 5.1 interpreter (lupa's lua51), and the Application."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest
import yaml

from lupa import lua51 as lupa  # noqa: E402  (the test extra installs lupa)

REPO = Path(__file__).resolve().parent.parent
ARGOCD = REPO / "deploy" / "argocd"
TRAINING = "resource.customizations.health.sagemaker.services.k8s.aws_TrainingJob"
TUNING = "resource.customizations.health.sagemaker.services.k8s.aws_HyperParameterTuningJob"
TRAIN_JOB = "resource.customizations.health.trainer.kubeflow.org_TrainJob"
EXPERIMENT = "resource.customizations.health.kubeflow.org_Experiment"


def build_module():
    spec = importlib.util.spec_from_file_location("build_health_config",
                                                  ARGOCD / "build_health_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_map() -> dict:
    return yaml.safe_load((ARGOCD / "argocd-cm-health.yaml").read_text())


def run_health(script: str, obj: dict) -> dict:
    """Run a health script as Argo CD does: `obj` global, a returned {status, message} table."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    assert lua.eval("_VERSION") == "Lua 5.1"
    lua.globals().obj = to_lua(lua, obj)
    result = lua.execute(script)
    return {"status": result["status"], "message": result["message"]}


def to_lua(lua, value):
    """Python -> Lua tables the way Argo CD hands JSON to gopher-lua (lists 1-based)."""
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def job(status: dict | None = None, kind: str = "TrainingJob") -> dict:
    obj = {"apiVersion": "sagemaker.services.k8s.aws/v1alpha1", "kind": kind,
           "metadata": {"name": "sample-0123456789"}, "spec": {}}
    if status is not None:
        obj["status"] = status
    return obj


def cond(kind: str, status: str, message: str | None = None) -> dict:
    c = {"type": kind, "status": status}
    if message:
        c["message"] = message
    return c


SYNCED = [cond("ACK.ResourceSynced", "True"), cond("Ready", "True")]

TRAINING_CASES = [
    ("no status yet", None, "Progressing", "Waiting for SageMaker to create the training job"),
    ("status without job status", {"conditions": []}, "Progressing",
     "Waiting for SageMaker to create the training job"),
    ("recoverable error", {"conditions": [cond("ACK.Recoverable", "True", "throttled")]},
     "Progressing", "Waiting: throttled"),
    ("in progress", {"trainingJobStatus": "InProgress", "secondaryStatus": "Downloading",
                     "conditions": SYNCED}, "Progressing", "Downloading"),
    ("in progress without secondary", {"trainingJobStatus": "InProgress"}, "Progressing",
     "InProgress"),
    ("stopping", {"trainingJobStatus": "Stopping", "secondaryStatus": "Stopping"},
     "Progressing", "Stopping"),
    ("completed", {"trainingJobStatus": "Completed", "secondaryStatus": "Completed",
                   "modelArtifacts": {"s3ModelArtifacts": "s3://b/out/model.tar.gz"},
                   "conditions": SYNCED}, "Healthy", "Completed: s3://b/out/model.tar.gz"),
    ("completed without artifacts", {"trainingJobStatus": "Completed"}, "Healthy", "Completed"),
    ("failed: Ready and Synced, yet Degraded",
     {"trainingJobStatus": "Failed", "failureReason": "AlgorithmError: CUDA out of memory",
      "conditions": SYNCED}, "Degraded", "AlgorithmError: CUDA out of memory"),
    ("stopped", {"trainingJobStatus": "Stopped", "secondaryStatus": "MaxRuntimeExceeded"},
     "Degraded", "Stopped: MaxRuntimeExceeded"),
    ("terminal condition wins",
     {"trainingJobStatus": "InProgress",
      "conditions": [cond("ACK.Terminal", "True", "ValidationException: bad instance type")]},
     "Degraded", "ValidationException: bad instance type"),
    ("terminal without a message", {"conditions": [cond("ACK.Terminal", "True")]}, "Degraded",
     "ACK.Terminal: the controller cannot create or update the job"),
    ("terminal condition False is ignored",
     {"trainingJobStatus": "InProgress", "secondaryStatus": "Training",
      "conditions": [cond("ACK.Terminal", "False", "old")]}, "Progressing", "Training"),
    ("unknown status", {"trainingJobStatus": "Deleting"}, "Progressing",
     "Unknown training job status Deleting"),
]

BEST = {"trainingJobName": "sample-tune-0123456-003-abcdef01",
        "finalHyperParameterTuningJobObjectiveMetric": {"metricName": "eval_reward",
                                                        "value": 0.5}}
TUNING_CASES = [
    ("no status yet", None, "Progressing", "Waiting for SageMaker to create the tuning job"),
    ("recoverable error", {"conditions": [cond("ACK.Recoverable", "True", "quota")]},
     "Progressing", "Waiting: quota"),
    ("in progress", {"hyperParameterTuningJobStatus": "InProgress"}, "Progressing",
     "InProgress"),
    ("in progress with a best job so far",
     {"hyperParameterTuningJobStatus": "InProgress", "bestTrainingJob": BEST}, "Progressing",
     "InProgress: so far best training job sample-tune-0123456-003-abcdef01 (eval_reward=0.5)"),
    ("stopping", {"hyperParameterTuningJobStatus": "Stopping"}, "Progressing", "Stopping"),
    ("completed with the best job",
     {"hyperParameterTuningJobStatus": "Completed", "bestTrainingJob": BEST,
      "conditions": SYNCED}, "Healthy",
     "Completed: best training job sample-tune-0123456-003-abcdef01 (eval_reward=0.5)"),
    ("completed without a best job", {"hyperParameterTuningJobStatus": "Completed"}, "Healthy",
     "Completed: no best training job reported"),
    ("failed", {"hyperParameterTuningJobStatus": "Failed",
                "failureReason": "All training jobs failed", "conditions": SYNCED},
     "Degraded", "All training jobs failed"),
    ("stopped", {"hyperParameterTuningJobStatus": "Stopped"}, "Degraded",
     "Stopped: no reason given"),
    ("terminal condition", {"conditions": [cond("ACK.Terminal", "True", "name in use")]},
     "Degraded", "name in use"),
    ("unknown status", {"hyperParameterTuningJobStatus": "Deleting"}, "Progressing",
     "Unknown tuning job status Deleting"),
]


@pytest.mark.parametrize("status,health,message", [c[1:] for c in TRAINING_CASES],
                         ids=[c[0] for c in TRAINING_CASES])
def test_training_job_health(status, health, message):
    script = config_map()["data"][TRAINING]
    assert run_health(script, job(status)) == {"status": health, "message": message}


@pytest.mark.parametrize("status,health,message", [c[1:] for c in TUNING_CASES],
                         ids=[c[0] for c in TUNING_CASES])
def test_tuning_job_health(status, health, message):
    script = config_map()["data"][TUNING]
    result = run_health(script, job(status, "HyperParameterTuningJob"))
    assert result == {"status": health, "message": message}


def test_config_map_holds_exactly_the_lua_files():
    from mtgrpo import backends

    data = config_map()["data"]
    assert {TRAINING, TUNING, TRAIN_JOB, EXPERIMENT} <= set(data)
    # every registered backend's checks (tests/test_argocd_*_health.py), nothing else
    assert data == {f"resource.customizations.health.{kind}": (ARGOCD / path).read_text()
                    for backend in backends.registry().values()
                    for kind, path in backend.health_checks.items()}
    assert config_map()["metadata"]["name"] == "argocd-cm"


def test_config_map_is_not_stale():
    module = build_module()
    assert module.main(["--check"]) == 0
    assert (ARGOCD / "argocd-cm-health.yaml").read_text() == module.render()


def test_application_syncs_run_once_jobs_safely():
    app = yaml.safe_load((ARGOCD / "application.yaml").read_text())
    assert app["kind"] == "Application" and app["apiVersion"] == "argoproj.io/v1alpha1"
    assert app["spec"]["source"]["path"] == "."  # the top-level kustomization.yaml
    policy = app["spec"]["syncPolicy"]
    assert policy["automated"]["prune"] is False
    options = policy.get("syncOptions", [])
    assert "Prune=false" in options
    assert not any(o.startswith(("Replace=", "Force=")) and o.endswith("true") for o in options)
    assert "resources-finalizer.argocd.argoproj.io" not in app["metadata"].get("finalizers", [])
    namespace = yaml.safe_load((REPO / "recipes" / "_project.yaml").read_text())["namespace"]
    assert app["spec"]["destination"]["namespace"] == namespace
    # its own AppProject, and the namespace it creates enforces the restricted Pod Security
    assert app["spec"]["project"] == "mtgrpo"
    labels = policy["managedNamespaceMetadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_app_project_allows_this_repository_namespace_and_rendered_kinds_only():
    from mtgrpo import backends

    app = yaml.safe_load((ARGOCD / "application.yaml").read_text())
    project = yaml.safe_load((ARGOCD / "appproject.yaml").read_text())
    assert project["kind"] == "AppProject" and project["metadata"]["name"] == "mtgrpo"
    spec = project["spec"]
    assert spec["sourceRepos"] == [app["spec"]["source"]["repoURL"]]
    assert spec["destinations"] == [app["spec"]["destination"]]
    assert spec["clusterResourceWhitelist"] == [{"group": "", "kind": "Namespace"}]
    allowed = {(r["group"], r["kind"]) for r in spec["namespaceResourceWhitelist"]}
    assert not any(r["group"] == "*" or r["kind"] == "*"
                   for r in spec["namespaceResourceWhitelist"])
    assert {kind for _, kind in allowed} == {kind for backend in backends.registry().values()
                                             for kind in backend.kinds}
    built = subprocess.run(["kubectl", "kustomize", str(REPO)], capture_output=True, text=True,
                           timeout=120)
    assert built.returncode == 0, built.stderr
    for doc in yaml.safe_load_all(built.stdout):
        group = doc["apiVersion"].rpartition("/")[0]
        assert (group, doc["kind"]) in allowed, doc["kind"]
        assert doc["metadata"]["namespace"] == app["spec"]["destination"]["namespace"]


def test_rendered_resources_opt_out_of_pruning():
    paths = sorted((REPO / "manifests").glob("*/*-*.yaml"))
    if not paths:
        pytest.skip("no rendered manifests yet")
    for path in paths:
        annotations = yaml.safe_load(path.read_text())["metadata"]["annotations"]
        options = annotations.get("argocd.argoproj.io/sync-options", "")
        assert "Prune=false" in options, path
        assert "Replace=true" not in options and "Force=true" not in options, path


def test_application_path_builds_with_kustomize():
    built = subprocess.run(["kubectl", "kustomize", str(REPO)], capture_output=True, text=True,
                           timeout=120)
    assert built.returncode == 0, built.stderr
    from mtgrpo import backends

    kinds = {d["kind"] for d in yaml.safe_load_all(built.stdout) if d}
    assert kinds <= {k for b in backends.registry().values() for k in b.kinds} and kinds


def test_patch_merges_into_a_live_argocd_cm(tmp_path):
    """The documented `kubectl patch --type merge` keeps argocd-cm's other keys (real kubectl)."""
    live = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "argocd-cm", "namespace": "argocd"},
            "data": {"url": "https://argocd.example.com", "timeout.reconciliation": "180s"}}
    path = tmp_path / "argocd-cm.yaml"
    path.write_text(yaml.safe_dump(live))
    patched = subprocess.run(
        ["kubectl", "patch", "-f", str(path), "--local", "--type", "merge", "--patch-file",
         str(ARGOCD / "argocd-cm-health.yaml"), "-o", "yaml"],
        capture_output=True, text=True, timeout=120)
    assert patched.returncode == 0, patched.stderr
    data = yaml.safe_load(patched.stdout)["data"]
    assert data["url"] == "https://argocd.example.com"
    assert data["timeout.reconciliation"] == "180s"
    assert data[TRAINING] == config_map()["data"][TRAINING]
    assert data[TUNING] == config_map()["data"][TUNING]
