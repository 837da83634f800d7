"""``mtgrpo status|wait|logs trainjob/NAME``: a TrainJob's state, its end, its pods' logs.

The state follows the Argo CD health check (deploy/argocd/health/trainjob.lua): a ``Failed``
condition wins, then ``Complete``, then ``Suspended``; otherwise it is running (or not yet
started). Exit codes of :func:`wait` are ``mtgrpo wait``'s: 0 Complete, 1 Failed or deleted,
124 timed out. Logs come from the pods through the Kubernetes API (container ``node``): the
pod of the given node rank, found by JobSet's and the Job controller's labels.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from mtgrpo.errors import Problem, Unreachable, UserError
from mtgrpo.kubeflow import contract as kc

BACKEND = "kubeflow"
GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
TRAIN_JOB_KIND = "TrainJob"
PREFIXES = ("trainjob/", "trainjobs/", "trainjob.trainer.kubeflow.org/")
RANK_LABEL = "batch.kubernetes.io/job-completion-index"
COMPLETE, FAILED, SUSPENDED, RUNNING, PENDING = "Complete", "Failed", "Suspended", "Running", \
    "Pending"
COMPLETED_EXIT, FAILED_EXIT, TIMED_OUT = 0, 1, 124
NOT_APPLIED = "NotApplied"  # as mtgrpo.operate.status calls it


def train_job_name(arg: str) -> str | None:
    """NAME of a ``trainjob/NAME`` argument; None for anything else (an ACK job)."""
    lowered = arg.lower()
    for prefix in PREFIXES:
        if lowered.startswith(prefix):
            return arg[len(prefix):]
    return None


def state(obj: dict) -> tuple[str, str]:
    """(state, message) of a TrainJob."""
    status = obj.get("status") or {}
    true = {c.get("type"): c for c in status.get("conditions") or []
            if c.get("status") == "True"}
    for kind in (FAILED, COMPLETE, SUSPENDED):
        if kind in true:
            c = true[kind]
            text = ": ".join(t for t in (c.get("reason"), c.get("message")) if t)
            return kind, text or kind
    jobs = status.get("jobsStatus") or []
    if not jobs:
        return PENDING, "waiting for the TrainJob controller to create the JobSet"
    active = sum(j.get("active") or 0 for j in jobs)
    ready = sum(j.get("ready") or 0 for j in jobs)
    return RUNNING, f"{active} pods active, {ready} ready"


def get_custom(kube: Any, resource: tuple[str, str, str], selector: str,
               allowed: str) -> dict | None:
    """A custom object (``resource`` = group, version, plural; ``selector`` = kind/name), or
    None when it does not exist; any other refusal is one line naming ``allowed``."""
    from kubernetes.client.rest import ApiException

    group, version, plural = resource
    try:
        return kube.api.get_namespaced_custom_object(group, version, kube.namespace, plural,
                                                     selector.split("/", 1)[1])
    except ApiException as err:
        if err.status == 404:
            return None
        raise UserError(Problem(f"namespace {kube.namespace}", selector,
                                f"the API server answered {err.status} {err.reason}",
                                allowed)) from None
    except Exception as err:  # urllib3 MaxRetryError, connection refused, TLS
        reason = getattr(err, "reason", None) or err
        raise Unreachable(Problem(getattr(kube, "server", f"namespace {kube.namespace}"),
                                  selector, f"cannot reach the Kubernetes API: {reason}",
                                  allowed)) from None


def get(kube: Any, name: str) -> dict | None:
    """The TrainJob, or None when it does not exist."""
    return get_custom(kube, (GROUP, VERSION, PLURAL), f"trainjob/{name}",
                      "a reachable cluster and RBAC to get trainjobs")


def not_applied(kind: str, name: str, recipe: str, namespace: str) -> str:
    """The status line of a recipe's rendered resource that is not in the cluster."""
    return (f"{kind} {name}: {NOT_APPLIED} (what {recipe} renders to now; not in namespace "
            f"{namespace})")


def status_line(kube: Any, name: str, recipe: str = "") -> str:
    """The TrainJob's one-line state; for a ``recipe`` file's TrainJob, NotApplied if absent."""
    obj = get(kube, name)
    if obj is None and recipe:
        return not_applied(TRAIN_JOB_KIND, name, recipe, kube.namespace)
    if obj is None:
        raise UserError(Problem(f"namespace {kube.namespace}", f"trainjob/{name}",
                                "no TrainJob of that name", "kubectl get trainjobs"))
    kind, message = state(obj)
    spec = obj.get("spec") or {}
    nodes = (spec.get("trainer") or {}).get("numNodes", "?")
    return f"TrainJob {name}: {kind} ({message}); {nodes} nodes"


def wait(kube: Any, name: str, *, timeout_s: float, poll_s: float = 10.0,
         progress: Callable[[str], None] = lambda line: None,
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> tuple[int, str]:
    """Poll until the TrainJob completes or fails; (exit code, message)."""
    def read() -> tuple[str, str] | None:
        obj = get(kube, name)
        return None if obj is None else state(obj)

    return poll_until(f"TrainJob {name}", read, done=COMPLETE, failed=FAILED,
                      timeout_s=timeout_s, poll_s=poll_s, progress=progress, clock=clock,
                      sleep=sleep)


def poll_until(label: str, read: Callable[[], tuple[str, str] | None], *, done: str,
               failed: str, timeout_s: float, poll_s: float,
               progress: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> tuple[int, str]:
    """Poll ``read()`` ((state, message), None once deleted) until ``done`` or ``failed``."""
    deadline = clock() + timeout_s
    last = None
    while True:
        found = read()
        if found is None:
            return FAILED_EXIT, f"{label} is gone (deleted)"
        kind, message = found
        if (kind, message) != last:
            progress(f"{label}: {kind} ({message})")
            last = (kind, message)
        if kind == done:
            return COMPLETED_EXIT, f"{label} completed"
        if kind == failed:
            return FAILED_EXIT, f"{label} failed: {message}"
        if clock() >= deadline:
            return TIMED_OUT, f"{label} still {kind} after {timeout_s:g} s"
        sleep(poll_s)


def logs(kube: Any, name: str, *, node: int = 0, tail: int | None = None) -> str:
    """The ``node`` container's log of the TrainJob's pod of rank ``node`` (newest pod)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(kube.api.api_client)
    selector = f"{kc.JOB_NAME_LABEL}={name},{RANK_LABEL}={node}"
    try:
        pods = core.list_namespaced_pod(kube.namespace, label_selector=selector).items
        if not pods:
            raise UserError(Problem(f"namespace {kube.namespace}", f"trainjob/{name}",
                                    f"no pod of node {node} (yet)",
                                    "a running or finished TrainJob; --node 0.."
                                    "numNodes-1"))
        pod = max(pods, key=lambda p: (str(p.metadata.creation_timestamp or ""),
                                       p.metadata.name))  # a restarted JobSet's newest pod
        kwargs: dict[str, Any] = {"container": kc.CONTAINER}
        if tail is not None:
            kwargs["tail_lines"] = tail
        return core.read_namespaced_pod_log(pod.metadata.name, kube.namespace, **kwargs)
    except ApiException as err:
        raise UserError(Problem(f"namespace {kube.namespace}", f"trainjob/{name}",
                                f"the API server answered {err.status} {err.reason}",
                                "RBAC to list pods and get pods/log")) from None


def recipe_targets(selector: str) -> list[tuple[str, str, str]] | None:
    """(kind, name, namespace) of the TrainJob or Katib Experiment a ``backend: kubeflow``
    recipe file renders to now (as ``mtgrpo render`` names them: the content hash); None when
    ``selector`` is not a Kubeflow recipe file (a job name, or a SageMaker recipe)."""
    from pathlib import Path

    from mtgrpo.recipes import find_root, load_recipe
    from mtgrpo.render import build_resources, load_settings

    path = Path(selector)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return None
    recipe = load_recipe(path)
    if recipe.backend != BACKEND:
        return None
    return [(r.kind, r.name, r.body["metadata"].get("namespace") or "")
            for r in build_resources(recipe, load_settings(find_root(path)))
            if r.kind in (TRAIN_JOB_KIND, "Experiment")]


def in_namespace(kube: Any, namespace: str) -> Any:
    """The same connection for the namespace a recipe renders into (where it is applied)."""
    import dataclasses

    return dataclasses.replace(kube, namespace=namespace) if namespace else kube
