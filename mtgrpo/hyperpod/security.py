"""The locked-down pod of every rendered HyperPod job, and the check of a rendered pod.

Secure by default: the image's processes run as a non-root user, cannot gain privileges, hold
no Linux capabilities, use the runtime's default seccomp profile and see a read-only root
filesystem; what the trainer writes goes to emptyDirs (/opt/ml, /tmp, home, /dev/shm). The
service account token is not mounted: S3 access through EKS Pod Identity or IRSA uses its own
projected token, which the webhook mounts regardless.

:func:`check_pod` reads any rendered PodSpec (it names no HyperPod field), so other backends can
run the same check on their pods.
"""

from __future__ import annotations

from typing import Any, Mapping

from mtgrpo.errors import Problem
from mtgrpo.hyperpod import contract as hc

# Pod level. The operator's schema types the pod's securityContext as a container's (the SDK's
# generated models do), so only fields both have are set here: no fsGroup.
POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "runAsUser": hc.USER_ID,
                        "runAsGroup": hc.USER_ID,
                        "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY_CONTEXT = {"allowPrivilegeEscalation": False, "privileged": False,
                              "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                              "capabilities": {"drop": ["ALL"]},
                              "seccompProfile": {"type": "RuntimeDefault"}}


def check_pod(pod: Mapping[str, Any], where: str, key: str) -> list[Problem]:
    """Every way the rendered PodSpec ``pod`` (found at ``key`` of ``where``) is less locked
    down than the default above."""
    problems: list[Problem] = []

    def problem(sub: str, message: str, allowed: str) -> None:
        problems.append(Problem(where, f"{key}.{sub}", message, allowed))

    pod_sc = pod.get("securityContext") or {}
    if pod.get("automountServiceAccountToken") is not False:
        problem("automountServiceAccountToken", "the service account token is mounted",
                "false (Pod Identity and IRSA mount their own token)")
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problem(flag, f"{flag} is on", "false or unset")
    for i, volume in enumerate(pod.get("volumes") or []):
        if "hostPath" in volume:
            problem(f"volumes[{i}]", f"hostPath volume {volume.get('name')!r}",
                    "emptyDir, configMap or persistentVolumeClaim")
    for i, container in enumerate((pod.get("initContainers") or []) +
                                  (pod.get("containers") or [])):
        sub = f"containers[{container.get('name', i)}]"
        sc = container.get("securityContext") or {}
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        user = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if non_root is not True or user == 0:
            problem(f"{sub}.securityContext.runAsNonRoot", "may run as root",
                    "runAsNonRoot true and a non-zero runAsUser")
        if sc.get("allowPrivilegeEscalation") is not False:
            problem(f"{sub}.securityContext.allowPrivilegeEscalation",
                    "privilege escalation allowed", "false")
        if sc.get("privileged"):
            problem(f"{sub}.securityContext.privileged", "privileged container", "false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problem(f"{sub}.securityContext.readOnlyRootFilesystem",
                    "writable root filesystem", "true, with emptyDirs where it writes")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
            problem(f"{sub}.securityContext.capabilities", "capabilities not all dropped",
                    "drop [ALL], add none")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problem(f"{sub}.securityContext.seccompProfile", f"seccomp profile {seccomp}",
                    "RuntimeDefault")
        requests = (container.get("resources") or {}).get("requests") or {}
        for resource in ("cpu", "memory"):
            if resource not in requests:
                problem(f"{sub}.resources.requests.{resource}", f"no {resource} request",
                        "a request, so the scheduler reserves it")
    return problems
