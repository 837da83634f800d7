"""Locked-down pods on the cluster backends: the shipped Kubeflow recipes render pods that pass
the security-context, token and privilege checks (checkov's CKV_K8S checks reproduced below),
and `mtgrpo validate` refuses a template or recipe that loosens them without a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtgrpo.cli import main
from mtgrpo.recipes.yamlfile import parse_yaml_all
from mtgrpo.validate import pod_security
from tests.renderkit import REPO, copy_project

RUNTIME = "templates/kubeflow/trainingruntime.yaml.j2"
KF = "recipes/qwen3-1-7b-kubeflow.yaml"


def shipped_pods() -> list[tuple[str, dict]]:
    out = []
    for path in sorted((REPO / "manifests").glob("*/*-*.yaml")):
        for body in parse_yaml_all(path.read_text(), source=str(path)):
            out += [(f"{path.name}:{where}", pod) for where, pod in pod_security.pod_specs(body)]
    return out


def ckv_k8s(pod: dict) -> list[str]:
    """checkov 3's Kubernetes checks the project must pass, read as checkov reads them."""
    failed = []
    sc = pod.get("securityContext") or {}
    if pod.get("automountServiceAccountToken") is not False:
        failed.append("CKV_K8S_38")  # service account tokens only where necessary
    for flag, check in (("hostPID", "CKV_K8S_17"), ("hostIPC", "CKV_K8S_18"),
                        ("hostNetwork", "CKV_K8S_19")):
        if pod.get(flag):
            failed.append(check)
    if sc.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
        failed.append("CKV_K8S_31")
    for c in pod["containers"]:
        csc = c.get("securityContext") or {}
        caps = csc.get("capabilities") or {}
        checks = {
            "CKV_K8S_16": not csc.get("privileged"),
            "CKV_K8S_20": csc.get("allowPrivilegeEscalation") is False,
            "CKV_K8S_22": csc.get("readOnlyRootFilesystem") is True,
            "CKV_K8S_23": csc.get("runAsNonRoot", sc.get("runAsNonRoot")) is True,
            "CKV_K8S_28": "NET_RAW" in caps.get("drop", []) or "ALL" in caps.get("drop", []),
            "CKV_K8S_37": "ALL" in caps.get("drop", []),
            "CKV_K8S_39": "SYS_ADMIN" not in caps.get("add", []),
            "CKV_K8S_40": (csc.get("runAsUser", sc.get("runAsUser")) or 0) >= 10000,
            "CKV_K8S_10": "cpu" in (c.get("resources") or {}).get("requests", {}),
            "CKV_K8S_12": "memory" in (c.get("resources") or {}).get("requests", {}),
        }
        failed += [check for check, ok in checks.items() if not ok]
    vols = pod.get("volumes") or []
    if any("hostPath" in v for v in vols):
        failed.append("hostPath")
    return failed


def test_every_shipped_pod_passes_the_checks():
    pods = shipped_pods()
    assert len(pods) >= 2  # the Kubeflow runtimes of the shipped recipes
    for where, pod in pods:
        assert ckv_k8s(pod) == [], where
        assert pod_security.check_pod(pod, source=where, key="") == [], where
        mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert set(pod_security.SCRATCH.values()) <= mounts  # writable under a read-only root


def test_the_checks_fail_a_default_pod():
    pod = {"containers": [{"name": "c", "image": "x"}]}
    assert set(ckv_k8s(pod)) >= {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28",
                                 "CKV_K8S_31", "CKV_K8S_37", "CKV_K8S_38", "CKV_K8S_40"}
    keys = {p.key for p in pod_security.check_pod(pod, source="f", key="spec")}
    assert {"spec.automountServiceAccountToken",
            "spec.containers[c].securityContext.runAsNonRoot",
            "spec.containers[c].securityContext.readOnlyRootFilesystem",
            "spec.containers[c].securityContext.allowPrivilegeEscalation",
            "spec.containers[c].securityContext.capabilities.drop",
            "spec.containers[c].securityContext.seccompProfile",
            "spec.containers[c].resources.requests.cpu"} <= keys


@pytest.fixture
def project(tmp_path) -> Path:
    return copy_project(tmp_path / "repo", rendered=False)


def validate(project: Path, capsys, rel: str = KF) -> tuple[int, str]:
    code = main(["validate", "--root", str(project), str(project / rel)])
    return code, capsys.readouterr().err


FAKE_HF = "hf_" + "Xk9pQ2mZr7Lw4Tb8Vn3Hc6Jd1Fg5Sy0AeUq"  # assembled: no whole token in the file
HOSTILE_TEMPLATE_EDITS = {
    "hostNetwork": ("                  restartPolicy: \"Never\"\n",
                    "                  restartPolicy: \"Never\"\n                  hostNetwork: true\n",
                    "hostNetwork shares the node's namespace"),
    "hostPID": ("                  restartPolicy: \"Never\"\n",
                "                  restartPolicy: \"Never\"\n                  hostPID: true\n",
                "hostPID shares the node's namespace"),
    "privileged": ("                      securityContext: {{ security_context | json }}\n",
                   "                      securityContext: {privileged: true, "
                   "allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, "
                   "capabilities: {drop: [ALL]}}\n", "privileged container"),
    "hostPath": ("                  volumes:\n",
                 "                  volumes:\n                    - name: root\n"
                 "                      hostPath: {path: /}\n", "hostPath volume 'root'"),
    "secret": ("                      securityContext: {{ security_context | json }}\n",
               "                      securityContext: {{ security_context | json }}\n"
               "                      args: [\"--token=" + FAKE_HF + "\"]\n",
               "the value looks like a Hugging Face token (not shown)"),
    "capabilities": ("                      securityContext: {{ security_context | json }}\n",
                     "                      securityContext: {allowPrivilegeEscalation: false, "
                     "readOnlyRootFilesystem: true, capabilities: {drop: [ALL], "
                     "add: [SYS_ADMIN]}}\n", "adds capabilities"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_TEMPLATE_EDITS))
def test_a_template_cannot_open_the_pod_up(project, capsys, case):
    old, new, message = HOSTILE_TEMPLATE_EDITS[case]
    text = (project / RUNTIME).read_text()
    assert old in text
    (project / RUNTIME).write_text(text.replace(old, new, 1))
    code, err = validate(project, capsys)
    assert code == 1 and message in err, err
    # a recipe cannot excuse it: these are not loosenable settings
    assert case not in pod_security.LOOSENABLE


def recipe(project: Path, kubeflow: dict, name: str = "kf-sec") -> str:
    body = {"name": name, "extends": "qwen3-1-7b-kubeflow.yaml", "kubeflow": kubeflow}
    (project / f"recipes/{name}.yaml").write_text(json.dumps(body))
    return f"recipes/{name}.yaml"


def test_the_namespace_is_the_projects(project, capsys):
    code, err = validate(project, capsys, recipe(project, {"namespace": "kube-system"}))
    assert code == 1
    assert "kubeflow.namespace: namespace kube-system is not the project's (allowed: mtgrpo" \
        in err, err


def test_loosening_needs_a_reason_and_is_annotated(project, capsys):
    rel = recipe(project, {"priority_class": "system-node-critical",
                           "tolerations": [{"operator": "Exists"}]})
    code, err = validate(project, capsys, rel)
    assert code == 1
    assert "priorityClassName: TrainingRuntime: priority class 'system-node-critical'" in err
    assert "tolerates every taint" in err
    assert "or a reason in security_exceptions.priority_class" in err
    rel = recipe(project, {"priority_class": "team-high", "tolerations": [{"operator": "Exists"}],
                           "security_exceptions": {
                               "priority_class": "our queue preempts batch work",
                               "tolerations": "dedicated GPU pool with custom taints",
                               "writable_root_filesystem": "a legacy task writes to /srv"}})
    code, err = validate(project, capsys, rel)
    assert code == 0, err
    assert main(["render", "--root", str(project)]) == 0
    capsys.readouterr()
    (runtime,) = (project / "manifests").glob("kubeflow/kf-sec-*-trainingruntime.yaml")
    (body,) = parse_yaml_all(runtime.read_text(), source=str(runtime))
    notes = body["metadata"]["annotations"]
    assert notes["mtgrpo.io/security-exception-writable-root-filesystem"] == \
        "a legacy task writes to /srv"
    (_, pod), = pod_security.pod_specs(body)
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False
    assert pod["containers"][0]["securityContext"]["runAsNonRoot"] is True  # the rest stays


def test_unknown_or_empty_reasons_are_refused(project, capsys):
    rel = recipe(project, {"security_exceptions": {"privileged": "we need it",
                                                   "run_as_root": " "}})
    code, err = validate(project, capsys, rel)
    assert code == 1
    assert "kubeflow.security_exceptions.privileged: not a pod setting that can be loosened" in err
    assert "kubeflow.security_exceptions.run_as_root: the reason is empty" in err


def test_requests_come_from_the_catalogue():
    assert pod_security.catalogue_requests(
        {"node.kubernetes.io/instance-type": "g5.12xlarge"}) == {"cpu": "43", "memory": "172Gi"}
    assert pod_security.catalogue_requests({}) == pod_security.FLOOR_REQUESTS
