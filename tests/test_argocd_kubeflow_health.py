"""Argo CD health of TrainJobs and Katib Experiments, run in Lua 5.1 against sample statuses."""

from __future__ import annotations

import pytest

from tests.test_argocd_health import EXPERIMENT, TRAIN_JOB, cond, config_map, run_health


def train_job(status=None) -> dict:
    obj = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
           "metadata": {"name": "qwen3-1-7b-kubeflow-0123456789"}, "spec": {}}
    if status is not None:
        obj["status"] = status
    return obj


def experiment(status=None) -> dict:
    obj = {"apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment",
           "metadata": {"name": "tune-0123456789"},
           "spec": {"maxTrialCount": 10, "objective": {"objectiveMetricName": "eval_reward"}}}
    if status is not None:
        obj["status"] = status
    return obj


RUNNING_JOBS = {"jobsStatus": [{"name": "node", "active": 2, "ready": 2, "succeeded": 0,
                                "failed": 0, "suspended": 0}]}
TRAIN_JOB_CASES = [
    ("no status yet", None, "Progressing",
     "Waiting for the TrainJob controller to create the JobSet"),
    ("running", RUNNING_JOBS, "Progressing", "Running: 2 active, 2 ready"),
    ("complete", {"conditions": [cond("Complete", "True", "TrainJob is completed")]},
     "Healthy", "TrainJob is completed"),
    ("failed past the deadline",
     {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                      "message": "Job was active longer than specified deadline"}]},
     "Degraded", "DeadlineExceeded: Job was active longer than specified deadline"),
    ("failed wins over an old Suspended",
     {"conditions": [cond("Suspended", "False"), cond("Failed", "True", "pod failed")]},
     "Degraded", "pod failed"),
    ("suspended (a Kueue queue holds it)",
     {"conditions": [{"type": "Suspended", "status": "True", "reason": "Suspended"}]},
     "Suspended", "Suspended"),
    ("resumed: Suspended False", {**RUNNING_JOBS, "conditions": [cond("Suspended", "False")]},
     "Progressing", "Running: 2 active, 2 ready"),
]

BEST = {"bestTrialName": "tune-0123456789-abcdefgh",
        "observation": {"metrics": [{"name": "eval_reward", "latest": "0.53", "max": "0.6",
                                     "min": "0.1"}]}}
EXPERIMENT_CASES = [
    ("no status yet", None, "Progressing", "Waiting for Katib to start the experiment"),
    ("created", {"conditions": [cond("Created", "True")]}, "Progressing",
     "Waiting for Katib to start the experiment"),
    ("running", {"conditions": [cond("Created", "True"), cond("Running", "True")],
                 "trialsSucceeded": 3, "trialsFailed": 1, "currentOptimalTrial": BEST},
     "Progressing", "Running: 3/10 trials succeeded, 1 failed; so far best trial "
     "tune-0123456789-abcdefgh (eval_reward=0.53)"),
    ("succeeded", {"conditions": [cond("Running", "False"), cond("Succeeded", "True")],
                   "trialsSucceeded": 10, "currentOptimalTrial": BEST}, "Healthy",
     "Succeeded: best trial tune-0123456789-abcdefgh (eval_reward=0.53)"),
    ("succeeded without a best trial", {"conditions": [cond("Succeeded", "True")]}, "Healthy",
     "Succeeded: no best trial reported"),
    ("failed", {"conditions": [cond("Failed", "True", "max failed trials reached")]},
     "Degraded", "max failed trials reached"),
]


@pytest.mark.parametrize("status,health,message", [c[1:] for c in TRAIN_JOB_CASES],
                         ids=[c[0] for c in TRAIN_JOB_CASES])
def test_train_job_health(status, health, message):
    script = config_map()["data"][TRAIN_JOB]
    assert run_health(script, train_job(status)) == {"status": health, "message": message}


@pytest.mark.parametrize("status,health,message", [c[1:] for c in EXPERIMENT_CASES],
                         ids=[c[0] for c in EXPERIMENT_CASES])
def test_experiment_health(status, health, message):
    script = config_map()["data"][EXPERIMENT]
    assert run_health(script, experiment(status)) == {"status": health, "message": message}
