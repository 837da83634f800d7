"""A Katib Experiment's state for ``mtgrpo status|wait`` of a Kubeflow tuning recipe file.

Katib sets the conditions ``Created``, ``Running``, ``Restarting``, ``Succeeded`` and
``Failed`` (the newest true one is the state; ``Failed`` and ``Succeeded`` are final) and
counts its trials in ``status`` (``trials``, ``trialsSucceeded``, ...); the best trial so far is
``status.currentOptimalTrial``. Exit codes of :func:`wait` are ``mtgrpo wait``'s.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from mtgrpo.errors import Problem, UserError
from mtgrpo.kubeflow.operate import get_custom, not_applied, poll_until

GROUP, VERSION, PLURAL = "kubeflow.org", "v1beta1", "experiments"
SUCCEEDED, FAILED, RUNNING, CREATED = "Succeeded", "Failed", "Running", "Created"
COUNTS = (("succeeded", "trialsSucceeded"), ("running", "trialsRunning"),
          ("pending", "trialsPending"), ("failed", "trialsFailed"),
          ("early stopped", "trialsEarlyStopped"), ("killed", "trialsKilled"))


def get(kube: Any, name: str) -> dict | None:
    """The Experiment, or None when it does not exist."""
    return get_custom(kube, (GROUP, VERSION, PLURAL), f"experiment/{name}",
                      "a reachable cluster with Katib, and RBAC to get experiments.kubeflow.org")


def state(obj: dict) -> tuple[str, str]:
    """(state, message): a final condition wins, else the latest true one, else Pending."""
    true = {c.get("type"): c for c in (obj.get("status") or {}).get("conditions") or []
            if c.get("status") == "True"}
    for kind in (FAILED, SUCCEEDED, "Restarting", RUNNING, CREATED):
        if kind in true:
            c = true[kind]
            text = ": ".join(t for t in (c.get("reason"), c.get("message")) if t)
            return kind, text or kind
    return "Pending", "waiting for the Katib controller"


def status_line(kube: Any, name: str, recipe: str = "") -> str:
    """The Experiment's one-line state; NotApplied when the ``recipe`` file's is absent."""
    obj = get(kube, name)
    if obj is None and recipe:
        return not_applied("Experiment", name, recipe, kube.namespace)
    if obj is None:
        raise UserError(Problem(f"namespace {kube.namespace}", f"experiment/{name}",
                                "no Katib Experiment of that name (not applied yet?)",
                                "kubectl apply -k . (or let Argo CD sync); kubectl get "
                                "experiments"))
    kind, message = state(obj)
    status = obj.get("status") or {}
    counts = ", ".join(f"{status[key]} {label}" for label, key in COUNTS if status.get(key))
    line = f"Experiment {name}: {kind} ({message}); trials: {status.get('trials') or 0}"
    line += f" ({counts})" if counts else ""
    best = status.get("currentOptimalTrial") or {}
    if best.get("bestTrialName"):
        metrics = (best.get("observation") or {}).get("metrics") or []
        shown = " ".join(f"{m['name']}={m.get('latest')}" for m in metrics if m.get("name"))
        line += f"; best {best['bestTrialName']}" + (f" {shown}" if shown else "")
    return line


def wait(kube: Any, name: str, *, timeout_s: float, poll_s: float = 10.0,
         progress: Callable[[str], None] = lambda line: None,
         sleep: Callable[[float], None] = time.sleep) -> tuple[int, str]:
    """Poll until the Experiment succeeds (0) or fails or is deleted (1); 124 at the timeout."""
    def read() -> tuple[str, str] | None:
        obj = get(kube, name)
        return None if obj is None else state(obj)

    return poll_until(f"Experiment {name}", read, done=SUCCEEDED, failed=FAILED,
                      timeout_s=timeout_s, poll_s=poll_s, progress=progress, sleep=sleep)
