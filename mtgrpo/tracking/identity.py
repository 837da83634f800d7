"""Which run a job writes: one per job, named by the job, a tuning trial nested under its tuning
job's run. The name alone finds the run again, so a resumed job (spot, SIGTERM) continues its
run, and ``mtgrpo track`` writes the same run as the job did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

# SageMaker names a tuning job's trials <tuning job>-<3 digits>-<8 hex>.
SAGEMAKER_TRIAL = re.compile(r"^(?P<parent>.+)-\d{3}-[0-9a-f]{8}$")
# Katib names an Experiment's trials <experiment>-<8 random lower-case letters and digits>.
KATIB_TRIAL = re.compile(r"^(?P<parent>.+)-[a-z0-9]{8}$")
TUNING_OBJECTIVE = "_tuning_objective_metric"  # SageMaker adds it to every trial's hyperparameters
KATIB_TUNED_PREFIX = "MTGRPO_HP_"  # mtgrpo.kubeflow.contract: tuned values of a Katib trial

TRAINING, TUNING, LOCAL = "training", "tuning", "local"


@dataclass(frozen=True)
class RunIdentity:
    """``name``: the job (the run's name and the tag it is found by); ``parent``: the tuning
    job (or Katib Experiment) of a trial, whose run is the parent run."""

    name: str
    kind: str = TRAINING
    parent: str | None = None


def sagemaker_trial_parent(job_name: str, hyperparameters: Mapping[str, str]) -> str | None:
    match = SAGEMAKER_TRIAL.match(job_name)
    return match.group("parent") if match and TUNING_OBJECTIVE in hyperparameters else None


def job_identity(env: Mapping[str, str], hyperparameters: Mapping[str, str] | None = None,
                 *, default_name: str = "") -> RunIdentity:
    """The identity of the job this process runs in (SageMaker, Kubeflow, or a local run)."""
    from mtgrpo.kubeflow.contract import JOB_NAME_ENV

    hyperparameters = hyperparameters or {}
    if env.get("TRAINING_JOB_NAME"):  # SageMaker sets it in every training container
        name = env["TRAINING_JOB_NAME"]
        return RunIdentity(name, TRAINING, sagemaker_trial_parent(name, hyperparameters))
    if env.get(JOB_NAME_ENV):
        name = env[JOB_NAME_ENV]
        match = KATIB_TRIAL.match(name)
        tuned = any(k.startswith(KATIB_TUNED_PREFIX) for k in env)
        return RunIdentity(name, TRAINING, match.group("parent") if match and tuned else None)
    return RunIdentity(default_name or "local-run", LOCAL)


def wandb_run_id(name: str) -> str:
    """A W&B run id from a job name: the same job resumes the same W&B run."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)[:128]
