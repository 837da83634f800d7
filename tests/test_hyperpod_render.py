"""backend: hyperpod renders a HyperPodPyTorchJob the HyperPod SDK's own models accept, with the
placement, resources and scheduling labels the recipe asked for."""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path

import pytest

from mtgrpo.hyperpod.validate import schema_problems
from mtgrpo.hyperpod.vendor.refresh import load_models
from mtgrpo.validate import pod_security
from tests.hyperpodkit import project, recipe, render

REPO = Path(__file__).resolve().parents[1]
VENDOR = REPO / "mtgrpo" / "hyperpod" / "vendor"
SHIPPED = "qwen3-8b-hyperpod"


@pytest.fixture(scope="module")
def sdk():
    """The SDK's generated pydantic models (vendored verbatim; pydantic is in the test extra)."""
    return load_models()


def sdk_accepts(sdk, body: dict) -> None:
    """As the SDK reads a job back from the cluster (``_load_hp_job``), and strictly: its top
    model ignores unknown keys, so those are compared with its fields."""
    models, metadata = sdk
    assert body["apiVersion"] == "sagemaker.amazonaws.com/v1"
    assert body["kind"] == "HyperPodPyTorchJob"
    metadata.Metadata.model_validate(body["metadata"])
    assert set(body["spec"]) <= set(models._HyperPodPytorchJob.model_fields)
    return models._HyperPodPytorchJob.model_validate(body["spec"], by_name=True)


def job_of(resources) -> dict:
    (job,) = [r for r in resources if r.kind == "HyperPodPyTorchJob"]
    return job.body


def test_held_out_recipe_renders_a_job_the_sdk_accepts_with_what_it_asked(tmp_path, sdk):
    root = project(tmp_path, recipe())
    resources, problems = render(root, "hp-held-out")
    assert problems == []
    assert sorted(r.kind for r in resources) == ["ConfigMap", "HyperPodPyTorchJob"]
    body = job_of(resources)
    spec = sdk_accepts(sdk, body)
    # placement: 3 pods of 6 GPUs; the launcher's vLLM GPU is on the first, so 5 ranks each
    assert spec.replicaSpecs[0].replicas == 3 and spec.nprocPerNode == "5"
    pod = spec.replicaSpecs[0].template.spec
    container = pod.containers[0]
    assert container.resources.requests["nvidia.com/gpu"] == "6"
    assert container.resources.limits["nvidia.com/gpu"] == "6"
    assert container.resources.requests["vpc.amazonaws.com/efa"] == "2"
    assert {"cpu", "memory"} <= set(container.resources.requests)
    assert pod.nodeSelector == {"node.kubernetes.io/instance-type": "ml.p4d.24xlarge",
                                "team": "agents"}
    terms = pod.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution
    assert {(e.key, tuple(e.values)) for e in terms.nodeSelectorTerms[0].matchExpressions} == {
        ("sagemaker.amazonaws.com/node-health-status", ("Schedulable",)),
        ("sagemaker.amazonaws.com/deep-health-check-status", ("Passed",))}
    # scheduling: Kueue (task governance) on the job and its pods
    for labels in (body["metadata"]["labels"], spec.replicaSpecs[0].template.metadata.labels):
        assert labels["kueue.x-k8s.io/queue-name"] == "hyperpod-ns-agents-localqueue"
        assert labels["kueue.x-k8s.io/priority-class"] == "inference-priority"
    assert body["metadata"]["namespace"] == "hyperpod-ns-agents"
    # auto-resume
    assert spec.runPolicy.jobMaxRetryCount == 5
    assert spec.runPolicy.restartPolicy.maxFullJobRestarts == 5
    # the agent starts the image's launcher once per pod
    assert container.command == ["hyperpodrun", "--nnodes=3", "--nproc-per-node=1",
                                 "--server-port=8080", "-m", "mtgrpo.hyperpod", "train"]
    env = {e.name: e.value for e in container.env}
    assert env["NNODES"] == "3" and env["AWS_REGION"] == "us-east-1"
    # FSx: mounted, channels and checkpoints on it
    assert [v.persistentVolumeClaim.claimName for v in pod.volumes
            if v.persistentVolumeClaim] == ["fsx-claim"]
    config = next(r for r in resources if r.kind == "ConfigMap").body
    assert '"checkpoints": {"dir": "/fsx/checkpoints"}' in config["data"]["hyperpod.json"]
    assert '"corpus": "/fsx/corpus/wiki"' in config["data"]["hyperpod.json"]
    # locked down by default
    assert pod_security.check_pod(body["spec"]["replicaSpecs"][0]["template"]["spec"],
                                  source="x", key="pod") == []
    assert pod.automountServiceAccountToken is False
    assert container.securityContext.readOnlyRootFilesystem is True
    assert container.securityContext.capabilities.drop == ["ALL"]


def test_shipped_recipe_renders_a_job_the_sdk_accepts(tmp_path, sdk):
    from mtgrpo.recipes import load_recipe
    from mtgrpo.hyperpod.render import build_hyperpod_resources
    from mtgrpo.hyperpod.validate import check_recipe, check_resources
    from mtgrpo.render.settings import load_settings

    path = REPO / "recipes" / f"{SHIPPED}.yaml"
    data = load_recipe(path, root=REPO)
    assert check_recipe(data) == []
    resources = build_hyperpod_resources(data, load_settings(REPO))
    assert check_resources(resources, data, namespace="mtgrpo") == []
    assert {r.body["metadata"]["namespace"] for r in resources} == {"mtgrpo"}
    spec = sdk_accepts(sdk, job_of(resources))
    assert spec.replicaSpecs[0].replicas == 2 and spec.nprocPerNode == "7"
    requests = spec.replicaSpecs[0].template.spec.containers[0].resources.requests
    assert requests["nvidia.com/gpu"] == "8" and requests["vpc.amazonaws.com/efa"] == "32"
    assert spec.runPolicy.logMonitoringConfiguration[0].expectedRecurringFrequencyInSeconds \
        == 3600
    # the same bytes twice; a change that alters what runs gives a new name
    again = build_hyperpod_resources(load_recipe(path, root=REPO), load_settings(REPO))
    assert [r.text for r in again] == [r.text for r in resources]
    assert re.fullmatch(r"qwen3-8b-hyperpod-[0-9a-f]{10}", resources[0].name)


def test_a_change_that_alters_the_job_renames_it(tmp_path):
    root = project(tmp_path, recipe(), recipe(name="hp-b", hyperpod={"max_retries": 4}),
                   recipe(name="hp-c", job={"tags": {"team": "agents", "cost": "x"}}))
    names = {n: render(root, n)[0][0].name.rsplit("-", 1)[1]
             for n in ("hp-held-out", "hp-b", "hp-c")}
    assert len(set(names.values())) == 3


@pytest.mark.parametrize("change,key,message", [
    (lambda s: s["replicaSpecs"][0]["template"]["spec"]["securityContext"].update(fsGroup=1),
     "spec.replicaSpecs.0.template.spec.securityContext", "'fsGroup' was unexpected"),
    (lambda s: s["replicaSpecs"][0].update(replicas="three"), "spec.replicaSpecs.0.replicas",
     "'three' is not of type 'integer'"),
    (lambda s: s["runPolicy"].update(maxRetries=3), "spec.runPolicy",
     "'maxRetries' was unexpected"),
    (lambda s: s.update(nprocPerNodes="5"), "spec", "'nprocPerNodes' was unexpected"),
])
def test_the_schema_check_refuses_what_the_sdk_refuses(tmp_path, sdk, change, key, message):
    body = copy.deepcopy(job_of(render(project(tmp_path, recipe()), "hp-held-out")[0]))
    change(body["spec"])
    found = schema_problems(body, "manifests/x.yaml")
    assert [(p.key, message in p.message) for p in found] == [(key, True)], found
    if key != "spec":  # the SDK's own top model ignores unknown keys (see sdk_accepts)
        from pydantic import ValidationError

        with pytest.raises(ValidationError):
            sdk_accepts(sdk, body)


def test_a_template_that_opens_the_pod_up_is_refused_by_the_shared_rule(tmp_path):
    from mtgrpo.hyperpod.validate import check_resources
    from mtgrpo.recipes import read_recipe

    root = project(tmp_path, recipe())
    resources, _ = render(root, "hp-held-out")
    (job,) = [r for r in resources if r.kind == "HyperPodPyTorchJob"]
    pod = job.body["spec"]["replicaSpecs"][0]["template"]["spec"]
    pod["automountServiceAccountToken"] = True
    pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    job.body["metadata"]["namespace"] = "kube-system"
    data = read_recipe(root / "recipes" / "hp-held-out.yaml", root=root)
    keys = {p.key for p in check_resources(resources, data, namespace="hyperpod-ns-agents")}
    where = "spec.replicaSpecs[0].template.spec"
    assert {"hyperpod.namespace", f"{where}.automountServiceAccountToken",
            f"{where}.volumes[{len(pod['volumes']) - 1}]",
            f"{where}.containers[pytorch].securityContext.allowPrivilegeEscalation"} <= keys


def test_loosening_needs_a_reason_and_is_annotated(tmp_path, sdk):
    reason = "the profiler needs to write its traces under /usr/local"
    root = project(tmp_path, recipe(hyperpod={"security_exceptions": {
        "writable_root_filesystem": reason}}))
    resources, problems = render(root, "hp-held-out")
    assert problems == []
    body = job_of(resources)
    sdk_accepts(sdk, body)
    pod = body["spec"]["replicaSpecs"][0]["template"]["spec"]
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False
    assert body["metadata"]["annotations"][
        "mtgrpo.io/security-exception-writable-root-filesystem"] == reason
    _, problems = render(project(tmp_path, recipe(hyperpod={"security_exceptions": {
        "privileged": "why not"}})), "hp-held-out")
    assert [p.key for p in problems] == ["hyperpod.security_exceptions.privileged"]


def test_vendored_files_match_their_recorded_checksums():
    table = (VENDOR / "SOURCE.md").read_text()
    rows = re.findall(r"^\| (\S+\.(?:py\.txt|json)) \| .* \| ([0-9a-f]{64}) \|$", table, re.MULTILINE)
    assert {name for name, _ in rows} == {"sdk_job_models.py.txt", "sdk_metadata.py.txt",
                                          "hyperpodpytorchjob.schema.json",
                                          "instance_resources.json"}
    for name, digest in rows:
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_the_vendored_schema_is_the_one_the_sdk_models_generate(sdk):
    import json

    from mtgrpo.hyperpod.vendor.refresh import SCHEMA_FILE, job_schema

    assert json.loads(SCHEMA_FILE.read_text()) == json.loads(json.dumps(job_schema(*sdk)))


def test_packaged_templates_match_the_repository_copies():
    for template in (REPO / "templates" / "hyperpod").glob("*.j2"):
        packaged = REPO / "mtgrpo" / "render" / "templates" / "hyperpod" / template.name
        assert packaged.read_bytes() == template.read_bytes(), template.name
