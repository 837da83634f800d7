"""What a TrainingJob or HyperParameterTuningJob resource says about its job, in one view.

The ACK controller writes SageMaker's state into ``status`` (FACTS §1): the job status, the
secondary status, the failure reason, the model artifact, the best trial of a tuning job, and
the ``ACK.*`` conditions. A Failed or Stopped job is Synced and Ready, not Terminal; Terminal
means the controller itself gave up (for example an invalid spec SageMaker refused).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from mtgrpo.operate.kube import KINDS, TRAINING, TUNING
from mtgrpo.ack.render import REGION_ANNOTATION
from mtgrpo.render.objects import RECIPE_LABEL
DONE = "Completed"
FAILED = ("Failed", "Stopped")
FINISHED = (DONE, *FAILED)


@dataclass
class JobView:
    kind: str
    name: str  # metadata.name
    job_name: str  # the SageMaker job name (spec)
    recipe: str
    status: str  # InProgress, Completed, ... ; "" before the controller has synced
    secondary_status: str
    failure_reason: str
    terminal: str  # the ACK.Terminal condition's message, "" when not terminal
    started: datetime | None
    ended: datetime | None
    instance_type: str
    instance_count: int
    region: str
    model_artifact: str  # S3 URI of model.tar.gz, "" when there is none (yet)
    best: dict[str, Any] = field(default_factory=dict)  # tuning: the best trial

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def elapsed_s(self, now: datetime) -> float | None:
        if self.started is None:
            return None
        end = self.ended if self.finished and self.ended else now
        return max(0.0, (end - self.started).total_seconds())


def view(obj: dict) -> JobView:
    kind = obj.get("kind") or (TUNING if "hyperParameterTuningJobName" in obj.get("spec", {})
                               else TRAINING)
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status") or {}
    terminal = next((c.get("message") or c.get("reason") or "Terminal"
                     for c in status.get("conditions") or []
                     if c.get("type") == "ACK.Terminal" and c.get("status") == "True"), "")
    started = _time(status.get("creationTime")) or _time(meta.get("creationTimestamp"))
    region = ((status.get("ackResourceMetadata") or {}).get("region")
              or meta.get("annotations", {}).get(REGION_ANNOTATION, ""))
    if kind == TUNING:
        definition = spec.get("trainingJobDefinition") or {}
        resources = definition.get("resourceConfig") or {}
        best = _best(status.get("bestTrainingJob") or {})
        state = status.get("hyperParameterTuningJobStatus", "")
        ended = _ready_time(status)
        artifact = ""
        if best.get("name") and DONE in (state, best.get("status")):
            artifact = tuning_artifact(spec, best["name"])
        job_name, secondary = spec.get("hyperParameterTuningJobName", ""), ""
    else:
        resources = spec.get("resourceConfig") or {}
        best = {}
        state = status.get("trainingJobStatus", "")
        ended = _time(status.get("lastModifiedTime"))
        artifact = (status.get("modelArtifacts") or {}).get("s3ModelArtifacts", "")
        job_name, secondary = spec.get("trainingJobName", ""), status.get("secondaryStatus", "")
    return JobView(
        kind=kind, name=meta.get("name", ""), job_name=job_name,
        recipe=meta.get("labels", {}).get(RECIPE_LABEL, ""), status=state,
        secondary_status=secondary, failure_reason=status.get("failureReason", ""),
        terminal=terminal, started=started, ended=ended,
        instance_type=resources.get("instanceType", ""),
        instance_count=int(resources.get("instanceCount") or 1), region=region,
        model_artifact=artifact, best=best)


def tuning_artifact(spec: dict, trial: str) -> str:
    """``<s3OutputPath>/<trial>/output/model.tar.gz`` of a tuning job's trial."""
    output = ((spec.get("trainingJobDefinition") or {}).get("outputDataConfig") or {})
    path = output.get("s3OutputPath", "")
    return f"{path.rstrip('/')}/{trial}/output/model.tar.gz" if path else ""


def _best(best: dict) -> dict[str, Any]:
    if not best.get("trainingJobName"):
        return {}
    metric = best.get("finalHyperParameterTuningJobObjectiveMetric") or {}
    return {"name": best["trainingJobName"], "status": best.get("trainingJobStatus", ""),
            "hyperparameters": dict(sorted((best.get("tunedHyperParameters") or {}).items())),
            "objective": metric.get("metricName", ""), "value": metric.get("value")}


def _ready_time(status: dict) -> datetime | None:
    """When a finished tuning job last changed (its status has no end time)."""
    if status.get("hyperParameterTuningJobStatus") not in FINISHED:
        return None
    times = [_time(c.get("lastTransitionTime")) for c in status.get("conditions") or []]
    times = [t for t in times if t]
    return max(times) if times else None


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def format_elapsed(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}h{minutes:02d}m" if hours or days else f"{minutes}m{secs:02d}s"
    return f"{days}d{text}" if days else text


def recipe_resources(selector: str, command: str) -> tuple[str, list] | None:
    """A recipe file's name and the ACK resources it renders to now; None when ``selector`` is
    not a recipe file (a job name). ``mtgrpo status`` and ``mtgrpo wait`` both follow them."""
    from pathlib import Path

    from mtgrpo.errors import Problem, UserError
    from mtgrpo.recipes import find_root, load_recipe
    from mtgrpo.render import build_resources, load_settings

    path = Path(selector)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return None
    recipe = load_recipe(path)
    resources = build_resources(recipe, load_settings(find_root(path)))
    if not any(r.kind in KINDS for r in resources):  # the registry routes others elsewhere
        raise UserError(Problem(recipe.source, "backend", f"this reads ACK SageMaker jobs; "
                                f"the recipe renders {', '.join(r.kind for r in resources)}",
                                f"mtgrpo {command} {recipe.source}"))
    return recipe.name, resources
