"""``mtgrpo status|wait|logs hyperpodpytorchjob/NAME``: a HyperPod job's state, its end, its
pods' logs.

The state follows the Argo CD health check (deploy/argocd/health/hyperpodpytorchjob.lua): of the
operator's conditions that are True, ``Failed`` wins, then ``Completed`` (``Succeeded`` read
the same), then ``Suspended`` (a Kueue queue holds the job), ``Restarting`` (auto-resume after a
fault) and ``Running``; otherwise it waits to be scheduled. Exit codes of :func:`wait` are
``mtgrpo wait``'s: 0 Completed, 1 Failed or deleted, 124 timed out. Logs come from the pods
through the Kubernetes API: the operator labels a job's pods ``HPJob=<name>`` and names them
``<name>-<replica spec>-<node rank>``.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from mtgrpo.errors import Problem, UserError
from mtgrpo.hyperpod import contract as hc

PREFIXES = ("hyperpodpytorchjob/", "hyperpodpytorchjobs/", "hpjob/",
            f"hyperpodpytorchjob.{hc.API_GROUP}/")
FAILED, COMPLETED, SUCCEEDED, SUSPENDED, RESTARTING, RUNNING, PENDING = (
    "Failed", "Completed", "Succeeded", "Suspended", "Restarting", "Running", "Pending")
ORDER = (FAILED, COMPLETED, SUCCEEDED, SUSPENDED, RESTARTING, RUNNING)
COMPLETED_EXIT, FAILED_EXIT, TIMED_OUT = 0, 1, 124
NOT_APPLIED = "NotApplied"  # as mtgrpo.operate.status calls it


def job_name(arg: str) -> str | None:
    """NAME of a ``hyperpodpytorchjob/NAME`` (or ``hpjob/NAME``) argument; None otherwise."""
    lowered = arg.lower()
    for prefix in PREFIXES:
        if lowered.startswith(prefix):
            return arg[len(prefix):]
    return None


def state(obj: dict) -> tuple[str, str]:
    """(state, message) of a HyperPodPyTorchJob."""
    status = obj.get("status") or {}
    true = {c.get("type"): c for c in status.get("conditions") or []
            if c.get("status") == "True"}
    for kind in ORDER:
        if kind in true:
            c = true[kind]
            text = ": ".join(t for t in (c.get("reason"), c.get("message")) if t) or kind
            if kind in (RESTARTING, RUNNING) and status.get("restartCount"):
                text += f" (restart {status['restartCount']})"
            return (COMPLETED if kind == SUCCEEDED else kind), text
    return PENDING, "waiting for the training operator (and Kueue) to start the pods"


def get(kube: Any, name: str) -> dict | None:
    """The job, or None when it does not exist; any other refusal is one line."""
    from kubernetes.client.rest import ApiException

    try:
        return kube.api.get_namespaced_custom_object(hc.API_GROUP, "v1", kube.namespace,
                                                     hc.PLURAL, name)
    except ApiException as err:
        if err.status == 404:
            return None
        raise UserError(Problem(f"namespace {kube.namespace}", f"hyperpodpytorchjob/{name}",
                                f"the API server answered {err.status} {err.reason}",
                                "a reachable cluster and RBAC to get hyperpodpytorchjobs"))\
            from None


def status_line(kube: Any, name: str, recipe: str = "") -> str:
    """The job's one-line state; for a ``recipe`` file's job, NotApplied if absent."""
    obj = get(kube, name)
    if obj is None and recipe:
        return (f"{hc.KIND} {name}: {NOT_APPLIED} (what {recipe} renders to now; not in "
                f"namespace {kube.namespace})")
    if obj is None:
        raise UserError(Problem(f"namespace {kube.namespace}", f"hyperpodpytorchjob/{name}",
                                f"no {hc.KIND} of that name", "kubectl get hyperpodpytorchjobs"))
    kind, message = state(obj)
    replicas = sum(r.get("replicas") or 0 for r in
                   (obj.get("spec") or {}).get("replicaSpecs") or [])
    return f"{hc.KIND} {name}: {kind} ({message}); {replicas} nodes"


def wait(kube: Any, name: str, *, timeout_s: float, poll_s: float = 10.0,
         progress: Callable[[str], None] = lambda line: None,
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> tuple[int, str]:
    """Poll until the job completes or fails; (exit code, message)."""
    label = f"{hc.KIND} {name}"
    deadline = clock() + timeout_s
    last = None
    while True:
        obj = get(kube, name)
        if obj is None:
            return FAILED_EXIT, f"{label} is gone (deleted)"
        kind, message = state(obj)
        if (kind, message) != last:
            progress(f"{label}: {kind} ({message})")
            last = (kind, message)
        if kind == COMPLETED:
            return COMPLETED_EXIT, f"{label} completed"
        if kind == FAILED:
            return FAILED_EXIT, f"{label} failed: {message}"
        if clock() >= deadline:
            return TIMED_OUT, f"{label} still {kind} after {timeout_s:g} s"
        sleep(poll_s)


def node_pod(pods: list, name: str, node: int) -> Any | None:
    """The pod of node rank ``node`` among a job's pods (newest first if several)."""
    suffix = f"-{node}"
    mine = [p for p in pods if p.metadata.name.startswith(f"{name}-")
            and p.metadata.name.endswith(suffix)
            and p.metadata.name[len(name) + 1:-len(suffix)] == hc.REPLICA_SPEC]
    if not mine:
        return None
    return max(mine, key=lambda p: (str(p.metadata.creation_timestamp or ""), p.metadata.name))


def logs(kube: Any, name: str, *, node: int = 0, tail: int | None = None) -> str:
    """The ``pytorch`` container's log of the job's pod of node rank ``node``."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(kube.api.api_client)
    try:
        pods = core.list_namespaced_pod(kube.namespace,
                                        label_selector=f"{hc.JOB_NAME_LABEL}={name}").items
        pod = node_pod(pods, name, node)
        if pod is None:
            raise UserError(Problem(f"namespace {kube.namespace}", f"hyperpodpytorchjob/{name}",
                                    f"no pod of node {node} (yet)",
                                    "a running or finished job; --node 0..replicas-1"))
        kwargs: dict[str, Any] = {"container": hc.CONTAINER}
        if tail is not None:
            kwargs["tail_lines"] = tail
        return core.read_namespaced_pod_log(pod.metadata.name, kube.namespace, **kwargs)
    except ApiException as err:
        raise UserError(Problem(f"namespace {kube.namespace}", f"hyperpodpytorchjob/{name}",
                                f"the API server answered {err.status} {err.reason}",
                                "RBAC to list pods and get pods/log")) from None


def in_namespace(kube: Any, namespace: str) -> Any:
    """The same connection for the namespace a recipe renders into (where it is applied)."""
    import dataclasses

    return dataclasses.replace(kube, namespace=namespace) if namespace else kube
