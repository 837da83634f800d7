"""Argo CD health of HyperPodPyTorchJobs, run in Lua 5.1 against sample statuses; `mtgrpo status`
reads the same conditions the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtgrpo.hyperpod import operate
from mtgrpo.hyperpod.backend import BACKEND
from tests.test_argocd_health import config_map, cond, run_health

ARGOCD = Path(__file__).resolve().parents[1] / "deploy" / "argocd"


def script() -> str:
    """The check as Argo CD gets it: the argocd-cm patch's key for this kind (the same text as
    the backend's Lua file)."""
    ((kind, path),) = BACKEND.health_checks.items()
    text = config_map()["data"][f"resource.customizations.health.{kind}"]
    assert text == (ARGOCD / path).read_text()
    return text


def hp_job(status=None) -> dict:
    obj = {"apiVersion": "sagemaker.amazonaws.com/v1", "kind": "HyperPodPyTorchJob",
           "metadata": {"name": "qwen3-8b-hyperpod-0123456789"}, "spec": {}}
    if status is not None:
        obj["status"] = status
    return obj


RUNNING = {"conditions": [cond("Created", "True"), cond("Running", "True")]}
CASES = [
    ("no status yet", None, "Progressing",
     "Waiting for the training operator (and Kueue) to start the pods", "Pending"),
    ("created", {"conditions": [cond("Created", "True")]}, "Progressing",
     "Waiting for the training operator (and Kueue) to start the pods", "Pending"),
    ("running", RUNNING, "Progressing", "Running", "Running"),
    ("restarting after a node fault",
     {"conditions": [cond("Running", "False"),
                     {"type": "Restarting", "status": "True", "reason": "NodeFault",
                      "message": "node i-0abc replaced"}], "restartCount": 2},
     "Progressing", "NodeFault: node i-0abc replaced (restart 2)", "Restarting"),
    ("running again after a restart", {**RUNNING, "restartCount": 1}, "Progressing",
     "Running (restart 1)", "Running"),
    ("completed", {"conditions": [cond("Running", "False"),
                                  cond("Completed", "True", "job completed")]},
     "Healthy", "job completed", "Completed"),
    ("succeeded", {"conditions": [cond("Succeeded", "True")]}, "Healthy",
     "HyperPodPyTorchJob completed", "Completed"),
    ("failed past its retries",
     {"conditions": [cond("Running", "True"),
                     {"type": "Failed", "status": "True", "reason": "MaxRetriesExceeded",
                      "message": "3 restarts"}]},
     "Degraded", "MaxRetriesExceeded: 3 restarts", "Failed"),
    ("queued by Kueue", {"conditions": [{"type": "Suspended", "status": "True",
                                         "reason": "WorkloadInadmissible"}]},
     "Suspended", "WorkloadInadmissible", "Suspended"),
]


@pytest.mark.parametrize("status,health,message,state", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_health(status, health, message, state):
    assert run_health(script(), hp_job(status)) == {"status": health, "message": message}
    assert operate.state(hp_job(status))[0] == state
