"""``mtgrpo track``: a job's run written from outside the job (a network-isolated job cannot reach
a tracking server; SageMaker still has everything the run needs).

- parameters: DescribeTrainingJob's hyperparameters, resolved as the trainer resolves them, and
  the environment the renderer gave the job (recipe, image; where the run goes);
- metrics: ``metrics.jsonl`` from the job's ``output.tar.gz`` once it has finished, else the
  CloudWatch series SageMaker published (operate/metric_series.py), same names either way;
- summary and artifacts: ``eval_summary.json`` (in the output), the curves PNG, the model's S3
  location.

It writes the same run the in-job tracker would (sinks.py, job.py), and only what the run lacks:
for MLflow the (metric, step) points it does not hold, for W&B the steps after its last, so
running it twice, or after an in-job tracker that missed steps, duplicates nothing. A tuning
job's trials are nested runs under one parent run named by the tuning job.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mtgrpo.errors import Problem, UserError
from mtgrpo.tracking.identity import TRAINING, TUNING, RunIdentity
from mtgrpo.tracking.job import (CURVES_FILE, MODEL_FILE, SUMMARY_FILE, run_params, run_tags,
                                 summary_metrics, write_curves)
from mtgrpo.tracking.settings import TrackingSettings

STATUS = {"Completed": "FINISHED", "Failed": "FAILED", "Stopped": "KILLED"}


@dataclass
class JobRun:
    """What one job's run holds, read from SageMaker, S3 and CloudWatch."""

    identity: RunIdentity
    params: dict[str, str]
    tags: dict[str, str]
    records: list[dict] = field(default_factory=list)
    metrics_from: str = ""
    summary: dict | None = None
    model_location: str = ""
    status: str = ""  # MLflow's run status; "" while the job runs
    settings: TrackingSettings | None = None


@dataclass
class Written:
    name: str
    steps: int  # steps that got at least one new point
    points: int
    metrics_from: str


def _resolved_hyperparameters(hyperparameters: Mapping[str, str]) -> dict[str, str]:
    """The hyperparameters as the trainer resolves them (max_staleness -1 -> 0 or 1)."""
    from mtgrpo.contract import TrainerConfig
    from mtgrpo.contract.config import resolved_staleness

    try:
        config = TrainerConfig.from_hyperparameters(hyperparameters)
    except UserError:
        return dict(hyperparameters)
    config = config.replace(max_staleness=resolved_staleness(config))
    return config.to_hyperparameters()


def _read_output(s3, described: Mapping[str, Any]) -> dict[str, bytes]:
    """metrics.jsonl and eval_summary.json from the job's output.tar.gz ({} when absent)."""
    from botocore.exceptions import ClientError

    from mtgrpo.operate.artifacts import split_s3

    base = (described.get("OutputDataConfig") or {}).get("S3OutputPath", "")
    if not base:
        return {}
    bucket, key = split_s3(f"{base.rstrip('/')}/{described['TrainingJobName']}/output/"
                           "output.tar.gz")
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError:
        return {}
    found = {}
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            extracted = tar.extractfile(member) if member.isfile() else None
            if extracted is not None and name in ("metrics.jsonl", SUMMARY_FILE):
                found[name] = extracted.read()
    return found


def _cloudwatch_records(sagemaker, cloudwatch, job: str, host: str) -> list[dict]:
    from mtgrpo.operate import metric_series

    now = dt.datetime.now(dt.timezone.utc)
    start, end = metric_series.job_window(sagemaker, job, now)
    names = metric_series.metric_names(cloudwatch, job, host)
    return metric_series.records(metric_series.series(cloudwatch, job, names, start, end,
                                                      host=host, now=now))


def read_training_job(name: str, *, sagemaker, s3, cloudwatch, host: str = "algo-1",
                      parent: str | None = None) -> JobRun:
    """A training job's run: parameters, metrics (output first, else CloudWatch), summary."""
    described = sagemaker.describe_training_job(TrainingJobName=name)
    env = described.get("Environment") or {}
    settings = TrackingSettings.from_environment(env)
    raw = {str(k): str(v) for k, v in (described.get("HyperParameters") or {}).items()}
    image = (settings.image if settings and settings.image else
             (described.get("AlgorithmSpecification") or {}).get("TrainingImage", ""))
    params = run_params(_resolved_hyperparameters(raw), recipe=settings.recipe if settings
                        else "", job_name=name, image=image,
                        commit=settings.commit if settings else "")
    tags = run_tags(settings or TrackingSettings(), raw.get("algorithm", ""))
    output = _read_output(s3, described)
    run = JobRun(RunIdentity(name, TRAINING, parent), params, tags, settings=settings,
                 status=STATUS.get(described.get("TrainingJobStatus", ""), ""),
                 model_location=(described.get("ModelArtifacts") or {}).get(
                     "S3ModelArtifacts", ""))
    if "metrics.jsonl" in output:
        run.records = [json.loads(line) for line in
                       output["metrics.jsonl"].decode("utf-8").splitlines() if line.strip()]
        run.metrics_from = "output metrics.jsonl"
    else:
        run.records = _cloudwatch_records(sagemaker, cloudwatch, name, host)
        run.metrics_from = "CloudWatch"
    if SUMMARY_FILE in output:
        run.summary = json.loads(output[SUMMARY_FILE])
    return run


def tuning_trials(sagemaker, name: str) -> list[str]:
    """The training jobs of a tuning job, in name order."""
    names: list[str] = []
    paginator = sagemaker.get_paginator("list_training_jobs_for_hyper_parameter_tuning_job")
    for page in paginator.paginate(HyperParameterTuningJobName=name):
        names += [s["TrainingJobName"] for s in page.get("TrainingJobSummaries", [])]
    return sorted(names)


def write_run(run: JobRun, sinks: Sequence[Any], work: Path) -> Written:
    """Write ``run`` to every sink, only what each lacks."""
    keys = sorted({k for r in run.records for k in r if k != "step"})
    steps, points = set(), 0
    for sink in sinks:
        last = sink.open(run.identity, run.params, run.tags)
        have = sink.logged_steps(keys) if hasattr(sink, "logged_steps") else None
        for record in sorted(run.records, key=lambda r: int(r["step"])):
            step = int(record["step"])
            values = {k: float(v) for k, v in record.items()
                      if k != "step" and isinstance(v, (int, float))}
            if have is not None:
                values = {k: v for k, v in values.items() if step not in have[k]}
            elif step <= last:
                continue
            if values:
                sink.log(step, values)
                steps.add(step)
                points += len(values)
        final_step = max((int(r["step"]) for r in run.records), default=0)
        if run.summary is not None:
            sink.summary(_missing(sink, summary_metrics(run.summary), final_step), final_step)
            summary_file = work / SUMMARY_FILE
            summary_file.write_text(json.dumps(run.summary, indent=2, sort_keys=True) + "\n")
            sink.artifact(summary_file)
        if run.records:
            curves = write_curves(run.records, work / CURVES_FILE, run.identity.name)
            if curves is not None:
                sink.artifact(curves)
        if run.model_location:
            from mtgrpo.tracking.sinks import MODEL_TAG

            sink.tag(MODEL_TAG, run.model_location)
            model_file = work / MODEL_FILE
            model_file.write_text(json.dumps({"model": run.model_location}) + "\n")
            sink.artifact(model_file)
        if run.status:
            sink.close(run.status)
    return Written(run.identity.name, len(steps), points, run.metrics_from)


def _missing(sink, values: Mapping[str, float], step: int) -> dict[str, float]:
    if not hasattr(sink, "logged_steps"):
        return dict(values)
    have = sink.logged_steps(values)
    return {k: v for k, v in values.items() if not have[k]}


def write_parent(identity: RunIdentity, params: Mapping[str, str], tags: Mapping[str, str],
                 sinks: Sequence[Any], status: str) -> None:
    for sink in sinks:
        sink.open(identity, params, tags)
        if status:
            sink.close(status)


def track(names: Sequence[str], *, sagemaker, s3, cloudwatch,
          settings_for: Callable[[TrackingSettings | None, str], TrackingSettings],
          make_sinks: Callable[[TrackingSettings], list], host: str = "algo-1",
          say: Callable[[str], None] = print) -> list[Written]:
    """Write the runs of training and tuning jobs; ``settings_for(job's settings, name)`` picks
    where each goes (command-line flags over the job's environment)."""
    from botocore.exceptions import ClientError

    written: list[Written] = []
    with tempfile.TemporaryDirectory(prefix="mtgrpo-track-") as tmp:
        work = Path(tmp)
        for name in names:
            try:
                tuning = sagemaker.describe_hyper_parameter_tuning_job(
                    HyperParameterTuningJobName=name)
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") not in (
                        "ResourceNotFound", "ValidationException"):
                    raise
                tuning = None
            if tuning is None:
                run = read_training_job(name, sagemaker=sagemaker, s3=s3, cloudwatch=cloudwatch,
                                        host=host)
                settings = settings_for(run.settings, name)
                written.append(_write(run, settings, make_sinks, work, say))
                continue
            trials = tuning_trials(sagemaker, name)
            runs = [read_training_job(t, sagemaker=sagemaker, s3=s3, cloudwatch=cloudwatch,
                                      host=host, parent=name) for t in trials]
            settings = settings_for(next((r.settings for r in runs if r.settings), None), name)
            definition = tuning.get("TrainingJobDefinition") or {}
            static = {str(k): str(v) for k, v in
                      (definition.get("StaticHyperParameters") or {}).items()}
            params = run_params(static, recipe=settings.recipe, job_name=name,
                                image=(definition.get("AlgorithmSpecification") or {}).get(
                                    "TrainingImage", ""), commit=settings.commit)
            status = STATUS.get(tuning.get("HyperParameterTuningJobStatus", ""), "")
            write_parent(RunIdentity(name, TUNING), params,
                         run_tags(settings, static.get("algorithm", "")),
                         make_sinks(settings), status)
            say(f"{name}: parent run of {len(trials)} trial(s)")
            for run in runs:
                written.append(_write(run, settings, make_sinks, work, say))
    return written


def _write(run: JobRun, settings: TrackingSettings, make_sinks, work: Path, say) -> Written:
    sinks = make_sinks(settings)
    if not sinks:
        raise UserError(Problem(run.identity.name, "tracking", "nowhere to write the run: the "
                                "job's environment names no tracking server",
                                "--mlflow-uri URI or --wandb-project NAME, or a recipe with "
                                "a tracking: section"))
    done = write_run(run, sinks, work)
    say(f"{done.name}: {done.points} new point(s) over {done.steps} step(s) from "
        f"{done.metrics_from}" + (f" ({len(run.records)} step(s) in all)" if run.records
                                  else ""))
    return done
