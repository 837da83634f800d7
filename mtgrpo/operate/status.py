"""``mtgrpo status``: the jobs' state from the cluster, as a table or as JSON.

Everything comes from the resources' ``status`` that the ACK controller writes, except a tuning
job's trial counts: the controller does not copy SageMaker's ``TrainingJobStatusCounters`` into
the resource, so they are read with ``DescribeHyperParameterTuningJob`` when AWS credentials are
at hand, and shown as unknown otherwise.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Callable

from mtgrpo.errors import Problem, UserError, did_you_mean
from mtgrpo.operate.jobs import JobView, format_elapsed, recipe_resources, view
from mtgrpo.operate.kube import KINDS, TUNING, Kube

# A recipe's current job that is not in the cluster (not yet applied, or another namespace).
NOT_APPLIED = "NotApplied"
COUNTERS = (("completed", ("Completed",)), ("running", ("InProgress",)),
            ("failed", ("RetryableError", "NonRetryableError")), ("stopped", ("Stopped",)))


def select(kube: Kube, selectors: list[str]) -> list[JobView]:
    """Jobs in the namespace matching any selector (job name, recipe name or recipe file); all if none."""
    jobs = [view(obj) for kind in KINDS for obj in kube.list(kind)]
    if not selectors:
        return sorted(jobs, key=_order)
    chosen: dict[tuple[str, str], JobView] = {}
    for selector in selectors:
        recipe, rendered = _recipe_jobs(selector)
        for job in rendered:  # what `mtgrpo render` makes of the recipe now
            if not any((j.kind, j.name) == (job.kind, job.name) for j in jobs):
                job.status = NOT_APPLIED
                chosen[(job.kind, job.name)] = job
        key = selector.lower().split("/", 1)[-1]
        hits = [j for j in jobs if (recipe and j.recipe == recipe) or (not recipe and (
            j.name == key or j.job_name.lower() == key or j.recipe == selector))]
        if not hits and not rendered:
            names = sorted({j.name for j in jobs} | {j.recipe for j in jobs if j.recipe})
            raise UserError(Problem(
                f"namespace {kube.namespace}", selector,
                f"no job or recipe of that name{did_you_mean(recipe or key, names)}",
                ", ".join(names) or "no jobs exist"))
        for job in hits:
            chosen[(job.kind, job.name)] = job
    return sorted(chosen.values(), key=_order)


def _order(job: JobView) -> tuple:
    return (KINDS.index(job.kind), job.name)


def _recipe_jobs(selector: str) -> tuple[str, list[JobView]]:
    """A recipe file's name and the jobs it renders to now; ("", []) for other selectors."""
    found = recipe_resources(selector, "status")
    if found is None:
        return "", []
    name, resources = found
    return name, [view(r.body) for r in resources]


def trial_counts(job: JobView, client_for: Callable[[str], Any]) -> dict[str, int] | str:
    """A tuning job's trials by state from SageMaker, or why SageMaker could not tell."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        described = client_for(job.region).describe_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=job.job_name)
    except ClientError as err:
        return err.response.get("Error", {}).get("Code") or str(err)
    except BotoCoreError as err:
        return str(err)
    counters = described.get("TrainingJobStatusCounters") or {}
    return {name: sum(int(counters.get(k) or 0) for k in keys) for name, keys in COUNTERS}


def sagemaker_clients() -> Callable[[str], Any]:
    from mtgrpo.operate.aws import client

    cache: dict[str, Any] = {}

    def client_for(region: str):
        if region not in cache:
            cache[region] = client("sagemaker", region)
        return cache[region]
    return client_for


def as_records(jobs: list[JobView], now: datetime,
               counts: dict[str, dict[str, int] | str]) -> list[dict[str, Any]]:
    """JSON-able records; ``counts`` maps tuning jobs to trial counts or why they are unknown."""
    records = []
    for job in jobs:
        elapsed = job.elapsed_s(now)
        record: dict[str, Any] = {
            "kind": job.kind, "name": job.name, "jobName": job.job_name, "recipe": job.recipe,
            "status": job.status, "secondaryStatus": job.secondary_status,
            "failureReason": job.failure_reason, "terminal": job.terminal,
            "elapsedSeconds": None if elapsed is None else int(elapsed),
            "instanceType": job.instance_type, "instanceCount": job.instance_count,
            "modelArtifact": job.model_artifact}
        if job.kind == TUNING:
            known = counts.get(job.name, "not asked")
            record["trials"] = known if isinstance(known, dict) else None
            record["trialsUnknown"] = None if isinstance(known, dict) else known
            record["best"] = job.best or None
        records.append(record)
    return records


def to_json(records: list[dict[str, Any]]) -> str:
    return json.dumps(records, indent=2, sort_keys=True)


def to_table(records: list[dict[str, Any]], width: int = 60) -> str:
    header = ("JOB", "KIND", "RECIPE", "STATUS", "SECONDARY", "ELAPSED", "INSTANCES", "REASON")
    rows = []
    for r in records:
        reason = r["terminal"] and f"Terminal: {r['terminal']}" or r["failureReason"]
        rows.append((r["name"], "tuning" if r["kind"] == TUNING else "training",
                     r["recipe"] or "-", r["status"] or "Pending", r["secondaryStatus"] or "-",
                     format_elapsed(r["elapsedSeconds"]),
                     f"{r['instanceType'] or '?'} x {r['instanceCount']}",
                     _cut(reason, width) or "-"))
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row, record in zip([header, *rows], [None, *records]):
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
        if record and record["kind"] == TUNING and record["status"] != NOT_APPLIED:
            lines.extend("    " + extra for extra in _tuning_lines(record))
    return "\n".join(lines)


def _tuning_lines(record: dict[str, Any]) -> list[str]:
    trials = record.get("trials")
    lines = ["trials: " + (", ".join(f"{n} {k}" for k, n in trials.items()) if trials
                           else f"unknown ({record['trialsUnknown']})")]
    best = record.get("best")
    if best:
        value = "" if best.get("value") is None else f" {best['objective']}={best['value']:g}"
        tuned = " ".join(f"{k}={v}" for k, v in best["hyperparameters"].items())
        lines.append(f"best: {best['name']}{value}" + (f"  ({tuned})" if tuned else ""))
    else:
        lines.append("best: none yet")
    return lines


def _cut(text: str, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 3] + "..."
