"""``mtgrpo status``, ``wait`` and ``logs`` for ACK SageMaker jobs (TrainingJob,
HyperParameterTuningJob): what the command does once the registry routed a selector here.
The readers are :mod:`mtgrpo.operate` (resources in the cluster, CloudWatch, SageMaker)."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Sequence

from mtgrpo.errors import Problem, UserError
from mtgrpo.operate.kube import TUNING, Kube


def status(kube: Kube, selectors: Sequence[str], *, output: str, ask_cloud: bool) -> int:
    from mtgrpo.operate import status as st

    jobs = st.select(kube, list(selectors))
    if ask_cloud:
        clients = st.sagemaker_clients()
        counts = {j.name: st.trial_counts(j, clients) for j in jobs
                  if j.kind == TUNING and j.status != st.NOT_APPLIED}
    else:
        counts = {j.name: "not asked: --no-aws" for j in jobs if j.kind == TUNING}
    records = st.as_records(jobs, datetime.now(timezone.utc), counts)
    if output == "json":
        print(st.to_json(records))
    elif records:
        print(st.to_table(records))
    else:
        print(f"no jobs in namespace {kube.namespace}", file=sys.stderr)
    return 0


def wait(kube: Kube, selector: str, *, timeout_s: float, heartbeat_s: float) -> int:
    from mtgrpo.operate.wait import wait_for

    targets = _recipe_targets(selector)
    missing = [Problem(selector, kind, f"{name} is not in namespace {kube.namespace}",
                       "an applied recipe: kubectl apply -k . (or let Argo CD sync)")
               for kind, name in targets if not kube.exists(kind, name)]
    if missing:
        raise UserError(missing)
    if not targets:
        found = kube.find(selector)
        targets = [(found["kind"], found["metadata"]["name"])]

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    for kind, name in targets:  # a recipe's tuning job, then its training job
        outcome = wait_for(kube, kind, name, timeout_s=timeout_s, progress=progress,
                           heartbeat_s=heartbeat_s)
        print(outcome.message, flush=True)
        if outcome.code:
            return outcome.code
    return 0


def _recipe_targets(arg: str) -> list[tuple[str, str]]:
    from mtgrpo.operate.jobs import recipe_resources

    found = recipe_resources(arg, "wait")
    return [] if found is None else [(r.kind, r.name) for r in found[1]]


def logs(kube: Kube, selector: str, *, follow: bool, trial: str | None, node: int,
         poll_s: float) -> int:
    from mtgrpo.operate import logs as cloudwatch
    from mtgrpo.operate.aws import aws_errors
    from mtgrpo.operate.jobs import view

    job = view(kube.find(selector))
    if job.kind == TUNING:
        trial = trial or job.best.get("name")
        if not trial:
            raise UserError(Problem(f"{job.kind} {job.name}", "--trial",
                                    "the tuning job has no best trial yet; name one",
                                    f"a trial name starting with {job.job_name}-"))
    elif trial:
        raise UserError(Problem(f"{job.kind} {job.name}", "--trial",
                                "only a tuning job has trials", "a HyperParameterTuningJob"))
    else:
        trial = job.job_name
    with aws_errors(f"logs of {trial}"):
        reader = cloudwatch.LogReader(cloudwatch.logs_client(job.region), trial)
        running = _running_check(kube, job, trial)
        cloudwatch.print_logs(reader, lambda line: print(line, flush=True), follow=follow,
                              running=running, poll_s=poll_s)
    return 0


def _running_check(kube: Kube, job, trial: str):
    """Whether the job whose logs are printed is still running (asked while following)."""
    from mtgrpo.operate.jobs import FINISHED, view

    if job.kind != TUNING:
        return lambda: view(kube.get(job.kind, job.name)).status not in FINISHED

    from mtgrpo.operate.aws import client

    sagemaker = client("sagemaker", job.region)
    return lambda: sagemaker.describe_training_job(TrainingJobName=trial)[
        "TrainingJobStatus"] in ("InProgress", "Stopping")
