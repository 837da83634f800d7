"""The locked-down pod every cluster backend renders, and the check of any rendered pod.

Secure by default: the image's processes run as its non-root user (uid 10001), cannot gain
privileges, hold no Linux capabilities, use the runtime's default seccomp profile and see a
read-only root filesystem; what the trainer writes goes to emptyDirs (:data:`SCRATCH`: /opt/ml,
/tmp and the home directory with its Hugging Face, Triton and torch-extension caches, plus
/dev/shm). The service-account token is not mounted: S3 access through IRSA or EKS Pod Identity
uses its own projected token, which their webhook mounts regardless.

:func:`check_rendered` finds every PodSpec in a rendered object (any mapping with a
``containers`` list: a TrainingRuntime's replicated jobs, a Katib trial, a HyperPod replica) and
:func:`check_pod` checks one. Some settings are never allowed, whatever the template says: host
namespaces, privileged containers, added capabilities, host ports and hostPath volumes. The
others (:data:`LOOSENABLE`) may be loosened only with a reason in the recipe
(``<backend section>.security_exceptions.<setting>``), rendered as an annotation, as the
SageMaker isolation exceptions are.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from mtgrpo.errors import Problem
from mtgrpo.validate.secrets import looks_like_secret_value, value_problem, walk

USER_ID = 10001  # the image's non-root user (Dockerfile: USER 10001); checkov wants >= 10000
HOME_DIR = "/home/mtgrpo"
POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "runAsUser": USER_ID, "runAsGroup": USER_ID,
                        "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY_CONTEXT = {"allowPrivilegeEscalation": False, "privileged": False,
                              "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                              "capabilities": {"drop": ["ALL"]},
                              "seccompProfile": {"type": "RuntimeDefault"}}
# Where the trainer writes under a read-only root (name -> mount path): the SageMaker-style tree
# (channels, checkpoints, model, output), temporary files, and HOME's caches.
SCRATCH = {"opt-ml": "/opt/ml", "tmp": "/tmp", "home": HOME_DIR}

# Settings a recipe may loosen with a stated reason (setting -> what the check wants).
LOOSENABLE = {
    "run_as_root": "runAsNonRoot true and a non-zero runAsUser",
    "writable_root_filesystem": "readOnlyRootFilesystem true, with emptyDirs where it writes",
    "service_account_token": "automountServiceAccountToken false (IRSA and Pod Identity "
                             "mount their own token)",
    "seccomp_unconfined": "seccompProfile RuntimeDefault or Localhost",
    "no_resource_requests": "cpu and memory requests, so the scheduler reserves them",
    "priority_class": "no priorityClassName",
    "tolerations": "tolerations of the project's own taints only",
}
EXCEPTION_ANNOTATION = "mtgrpo.io/security-exception-"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
FLOOR_REQUESTS = {"cpu": "1", "memory": "4Gi"}
MAX_REASON = 500
HOST_FLAGS = ("hostNetwork", "hostPID", "hostIPC")


def catalogue_requests(node_selector: Mapping[str, str]) -> dict[str, str]:
    """CPU and memory requests for a pod filling one node of the instance type its selector
    names (90% of the catalogue's vCPUs and memory: the rest is the kubelet's and the daemon
    sets'), or a floor of 1 CPU and 4Gi when no catalogued type is named."""
    from mtgrpo.plan.instances import instance

    wanted = str(node_selector.get(INSTANCE_TYPE_LABEL) or "")
    found = instance(wanted if wanted.startswith("ml.") else f"ml.{wanted}") if wanted else None
    if found is None:
        return dict(FLOOR_REQUESTS)
    return {"cpu": str(max(1, found.vcpus * 9 // 10)),
            "memory": f"{max(1, found.host_memory_gib * 9 // 10)}Gi"}


def loosened_pod(reasons: Mapping[str, str]) -> tuple[dict, dict, bool]:
    """(pod securityContext, container securityContext, automountServiceAccountToken) with
    the settings ``reasons`` loosens turned off, the rest locked down."""
    pod = dict(POD_SECURITY_CONTEXT)
    container = dict(CONTAINER_SECURITY_CONTEXT)
    if "run_as_root" in reasons:
        for sc in (pod, container):
            sc.pop("runAsNonRoot", None)
        pod.pop("runAsUser"), pod.pop("runAsGroup")
    if "writable_root_filesystem" in reasons:
        container["readOnlyRootFilesystem"] = False
    if "seccomp_unconfined" in reasons:
        pod["seccompProfile"] = container["seccompProfile"] = {"type": "Unconfined"}
    return pod, container, "service_account_token" in reasons


def exception_annotations(reasons: Mapping[str, str]) -> dict[str, str]:
    """One annotation per loosened setting, holding the recipe's reason."""
    return {EXCEPTION_ANNOTATION + key.replace("_", "-"): reasons[key]
            for key in sorted(reasons) if key in LOOSENABLE}


def check_reasons(reasons: Any, source: str, key: str) -> list[Problem]:
    """The ``security_exceptions`` mapping itself: known settings, one short reason each."""
    if reasons is None:
        return []
    if not isinstance(reasons, Mapping):
        return [Problem(source, key, "must map settings to reasons", ", ".join(LOOSENABLE))]
    problems = []
    for setting, reason in reasons.items():
        if setting not in LOOSENABLE:
            problems.append(Problem(source, f"{key}.{setting}", "not a pod setting that can "
                                    "be loosened", ", ".join(LOOSENABLE)))
        elif not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
            problems.append(Problem(source, f"{key}.{setting}", "the reason is empty or too "
                                    "long", f"one sentence of 1 to {MAX_REASON} characters"))
    return problems


def pod_specs(value: Any, path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(path, PodSpec) for every mapping with a ``containers`` list under ``value``."""
    if isinstance(value, Mapping):
        if isinstance(value.get("containers"), list):
            yield path, value
            return
        for k, v in value.items():
            yield from pod_specs(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from pod_specs(v, f"{path}[{i}]")


def check_rendered(body: Mapping[str, Any], *, source: str, namespace: str | None = None,
                   reasons: Mapping[str, str] | None = None) -> list[Problem]:
    """One rendered object: its namespace is the project's (when ``namespace`` is given) and
    every pod in it is locked down; keys are the object's field paths."""
    problems = []
    meta = _dict(body.get("metadata"))
    if namespace is not None and meta.get("namespace") != namespace:
        problems.append(Problem(source, "metadata.namespace", f"namespace "
                                f"{meta.get('namespace')!r} is not the project's",
                                f"{namespace!r} (recipes/_project.yaml namespace)"))
    return problems + [p for path, pod in pod_specs(body)
                       for p in check_pod(pod, source=source, key=path, reasons=reasons)]


def check_pod(pod: Mapping[str, Any], *, source: str, key: str,
              reasons: Mapping[str, str] | None = None) -> list[Problem]:
    """Every way the PodSpec ``pod`` (at ``key`` of ``source``) is less locked down than the
    default above, except the settings ``reasons`` loosens."""
    reasons = reasons or {}
    problems: list[Problem] = []

    def problem(sub: str, message: str, allowed: str, setting: str = "") -> None:
        if setting and setting in reasons:
            return
        if setting:
            allowed += f", or a reason in security_exceptions.{setting}"
        problems.append(Problem(source, f"{key}.{sub}" if key else sub, message, allowed))

    pod_sc = _dict(pod.get("securityContext"))
    for flag in HOST_FLAGS:
        if pod.get(flag):
            problem(flag, f"{flag} shares the node's namespace", "false or unset")
    if pod.get("hostUsers") is True:
        problem("hostUsers", "hostUsers is true", "false or unset")
    if pod.get("automountServiceAccountToken") is not False:
        problem("automountServiceAccountToken", "the service account token is mounted",
                "false", "service_account_token")
    if pod.get("priorityClassName"):
        problem("priorityClassName", f"priority class {pod['priorityClassName']!r}",
                "unset", "priority_class")
    for i, toleration in enumerate(pod.get("tolerations") or []):
        toleration = _dict(toleration)
        if toleration.get("operator") == "Exists" and not toleration.get("key"):
            problem(f"tolerations[{i}]", "tolerates every taint (operator Exists, no key)",
                    "a toleration naming its taint's key", "tolerations")
    seccomp_pod = _dict(pod_sc.get("seccompProfile")).get("type")
    for i, volume in enumerate(pod.get("volumes") or []):
        volume = _dict(volume)
        if "hostPath" in volume:
            problem(f"volumes[{i}]", f"hostPath volume {volume.get('name')!r}",
                    "emptyDir, configMap, secret, projected or persistentVolumeClaim")
    containers = [("initContainers", c) for c in pod.get("initContainers") or []] + \
                 [("containers", c) for c in pod.get("containers") or []] + \
                 [("ephemeralContainers", c) for c in pod.get("ephemeralContainers") or []]
    for field, container in containers:
        container = _dict(container)
        sub = f"{field}[{container.get('name', '?')}]"
        sc = _dict(container.get("securityContext"))
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        user = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if non_root is not True or user == 0 or user is None:
            problem(f"{sub}.securityContext.runAsNonRoot", "may run as root",
                    LOOSENABLE["run_as_root"], "run_as_root")
        if sc.get("privileged"):
            problem(f"{sub}.securityContext.privileged", "privileged container", "false")
        if sc.get("allowPrivilegeEscalation") is not False:
            problem(f"{sub}.securityContext.allowPrivilegeEscalation",
                    "privilege escalation allowed", "false")
        if sc.get("procMount") not in (None, "Default"):
            problem(f"{sub}.securityContext.procMount", f"procMount {sc['procMount']}",
                    "Default")
        caps = _dict(sc.get("capabilities"))
        if caps.get("add"):
            problem(f"{sub}.securityContext.capabilities.add",
                    f"adds capabilities {caps['add']}", "none")
        if "ALL" not in (caps.get("drop") or []):
            problem(f"{sub}.securityContext.capabilities.drop", "capabilities not all dropped",
                    "drop [ALL]")
        if sc.get("readOnlyRootFilesystem") is not True:
            problem(f"{sub}.securityContext.readOnlyRootFilesystem", "writable root "
                    "filesystem", LOOSENABLE["writable_root_filesystem"],
                    "writable_root_filesystem")
        seccomp = _dict(sc.get("seccompProfile")).get("type") or seccomp_pod
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problem(f"{sub}.securityContext.seccompProfile", f"seccomp profile {seccomp}",
                    LOOSENABLE["seccomp_unconfined"], "seccomp_unconfined")
        for j, port in enumerate(container.get("ports") or []):
            if _dict(port).get("hostPort"):
                problem(f"{sub}.ports[{j}].hostPort", "binds a port of the node", "unset")
        if field == "containers":
            requests = _dict(_dict(container.get("resources")).get("requests"))
            for resource in ("cpu", "memory"):
                if resource not in requests:
                    problem(f"{sub}.resources.requests.{resource}", f"no {resource} request",
                            LOOSENABLE["no_resource_requests"], "no_resource_requests")
    return problems


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def check_cluster_resources(bodies: list[Mapping[str, Any]], *, source: str, section: str,
                            namespace: str, reasons: Any) -> list[Problem]:
    """What every cluster backend runs on its rendered objects: the recipe's
    ``<section>.security_exceptions``, each object in the project's namespace (named at
    ``<section>.namespace``) and every pod locked down (named by kind and field path)."""
    problems = check_reasons(reasons, source, f"{section}.security_exceptions")
    reasons = reasons if isinstance(reasons, Mapping) else {}
    wrong = sorted({str(_dict(b.get("metadata")).get("namespace")) for b in bodies
                    if _dict(b.get("metadata")).get("namespace") != namespace})
    if wrong:
        problems.append(Problem(source, f"{section}.namespace", f"namespace "
                                f"{', '.join(wrong)} is not the project's",
                                f"{namespace} (recipes/_project.yaml), or unset"))
    for body in bodies:
        found = check_rendered(body, source=source, reasons=reasons)
        # A credential a template wrote (the recipe's own strings were checked already).
        # Values only: the API's own field names (automountServiceAccountToken) are no secret.
        found += [value_problem(source, path, kind) for signal, path, text in walk(body, "")
                  if signal == "value" and (kind := looks_like_secret_value(text))]
        problems += [Problem(p.file, p.key, f"{body.get('kind')}: {p.message}", p.allowed)
                     for p in found]
    return problems
