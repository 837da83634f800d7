"""``check_resources``: each rendered k8s object against its CRD (strict) and the SageMaker API."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from mtgrpo.ack import to_request
from mtgrpo.errors import Problem
from mtgrpo.validate.crd_schema import check_against_crd, field_spellings
from mtgrpo.validate.secrets import find_secrets
from mtgrpo.validate.service_model import ack_path, check_request

# RFC 1123 subdomain, as the API server requires of metadata.name.
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_FIELD = {"TrainingJob": "trainingJobName",
               "HyperParameterTuningJob": "hyperParameterTuningJobName"}


def check_resources(resources: list[dict], *, source: str, crd_dir: Path) -> list[Problem]:
    """Problems of rendered resources: CRD schema with unknown fields rejected, then the
    equivalent Create* request against the SageMaker service model, then the cross-field rules
    SageMaker applies at create time. Keys are the resource's own field paths."""
    problems: list[Problem] = []
    for resource in resources:
        found = _check_one(resource, source, Path(crd_dir))
        kind = resource.get("kind") if isinstance(resource, dict) else None
        if kind in _NAME_FIELD:  # say which of a recipe's resources (training or tuning job)
            found = [Problem(p.file, p.key, f"{kind}: {p.message}", p.allowed) for p in found]
        problems += found
    return problems


def _check_one(resource: dict, source: str, crd_dir: Path) -> list[Problem]:
    if not isinstance(resource, Mapping):
        return [Problem(source, "", f"a resource must be a mapping, got "
                                    f"{type(resource).__name__}", "a k8s object")]
    kind = str(resource.get("kind", ""))
    problems = check_against_crd(resource, source=source, crd_dir=crd_dir)
    problems += _metadata(resource, source)
    if kind not in _NAME_FIELD or not isinstance(resource.get("spec"), Mapping):
        return problems
    # Not strict: fields the CRD check refused are left out, wrong types are kept for the
    # service-model check to name, so every other problem is still found.
    operation, request = to_request(resource, strict=False)
    spec = resource["spec"]
    crd_keys = {p.key for p in problems}
    for v in check_request(operation, request):
        path = ack_path(spec, v.steps, spellings=field_spellings(crd_dir))
        if path in crd_keys:
            continue  # already named by the CRD check (a wrong type)
        problems.append(Problem(source, path, v.message, v.allowed))
    problems += _cross_field(kind, spec, source)
    problems += _secrets(spec, source)
    return problems


def _secrets(spec: Mapping[str, Any], source: str) -> list[Problem]:
    """Secrets in a resource (hand-edited, or built from overrides at run time): never in Git."""
    return find_secrets(spec, source, "spec")


def _metadata(resource: Mapping[str, Any], source: str) -> list[Problem]:
    meta = resource.get("metadata")
    if not isinstance(meta, Mapping):
        return []  # the CRD check reports a missing or malformed metadata
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        return [Problem(source, "metadata.name", "required field is missing",
                        "the job name, lower-cased")]
    problems = []
    if len(name) > 253 or not _K8S_NAME.fullmatch(name):
        problems.append(Problem(source, "metadata.name", f"{name!r} is not a valid object name",
                                "lower-case letters, digits, '-' and '.', at most 253"))
    job = (resource.get("spec") or {}).get(_NAME_FIELD.get(str(resource.get("kind")), ""))
    if isinstance(job, str) and job.lower() != name:
        problems.append(Problem(source, "metadata.name", f"{name!r} differs from the job name "
                                f"{job!r} lower-cased", job.lower()))
    return problems


def _dicts(value: Any) -> list[dict]:
    """The mapping items of a list (anything else is the CRD check's to report)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _cross_field(kind: str, spec: Mapping[str, Any], source: str) -> list[Problem]:
    """Rules SageMaker applies at create time that its service model cannot express."""
    problems = _tags(spec, source)
    if kind == "TrainingJob":
        return problems + _job_definition(spec, "spec", source)
    definition = spec.get("trainingJobDefinition")
    if not isinstance(definition, dict):
        return problems + [Problem(source, "spec.trainingJobDefinition",
                                   "required field is missing",
                                   "the trial's training job definition")]
    base = "spec.trainingJobDefinition"
    problems += _job_definition(definition, base, source)
    config = _dict(spec.get("hyperParameterTuningJobConfig"))
    where = "spec.hyperParameterTuningJobConfig"
    static = _dict(definition.get("staticHyperParameters"))
    seen: set = set()
    for group, ranges in sorted(_dict(config.get("parameterRanges")).items()):
        for i, item in enumerate(_dicts(ranges)):
            name = item.get("name")
            if not isinstance(name, str):
                continue  # the CRD check reports a missing or mistyped name
            key = f"{where}.parameterRanges.{group}[{i}].name"
            if name in seen:
                problems.append(Problem(source, key, f"{name!r} is tuned twice",
                                        "each name in one range"))
            seen.add(name)
            if name in static:
                problems.append(Problem(source, f"{base}.staticHyperParameters.{name}",
                                        "is also a tuned range; SageMaker refuses both",
                                        "a name either in parameterRanges or static"))
    total = sum(len(_dicts(r)) for g, r in _dict(config.get("parameterRanges")).items()
                if g != "autoParameters")
    if total > 30:  # the model limits each list; SageMaker limits their sum
        problems.append(Problem(source, f"{where}.parameterRanges", f"{total} ranges in total",
                                "at most 30 across continuous, integer and categorical"))
    objective = _dict(config.get("hyperParameterTuningJobObjective")).get("metricName")
    metrics = [m.get("name") for m in _dicts(_dict(definition.get("algorithmSpecification"))
                                              .get("metricDefinitions"))]
    if objective is not None and objective not in metrics:
        problems.append(Problem(source, f"{where}.hyperParameterTuningJobObjective.metricName",
                                f"{objective!r} is not a defined metric",
                                ", ".join(str(m) for m in metrics) or "none defined"))
    limits = _dict(config.get("resourceLimits"))
    jobs, parallel = limits.get("maxNumberOfTrainingJobs"), limits.get("maxParallelTrainingJobs")
    if isinstance(jobs, int) and isinstance(parallel, int) and parallel > jobs:
        problems.append(Problem(source, f"{where}.resourceLimits.maxParallelTrainingJobs",
                                f"{parallel} exceeds maxNumberOfTrainingJobs {jobs}",
                                f"at most {jobs}"))
    return problems


def _tags(spec: Mapping[str, Any], source: str) -> list[Problem]:
    problems = []
    for i, tag in enumerate(_dicts(spec.get("tags"))):
        key = tag.get("key")
        if isinstance(key, str) and key.lower().startswith("aws:"):
            problems.append(Problem(source, f"spec.tags[{i}].key", f"{key!r} uses the "
                                    "reserved prefix aws:", "a key not starting with aws:"))
    return problems


def _job_definition(spec: Mapping[str, Any], base: str, source: str) -> list[Problem]:
    problems = []
    stop = _dict(spec.get("stoppingCondition"))
    run, wait = stop.get("maxRuntimeInSeconds"), stop.get("maxWaitTimeInSeconds")
    spot = spec.get("enableManagedSpotTraining") is True
    if spot and not isinstance(wait, int):
        problems.append(Problem(source, f"{base}.stoppingCondition.maxWaitTimeInSeconds",
                                "managed spot training needs a maximum wait time",
                                "maxWaitTimeInSeconds >= maxRuntimeInSeconds"))
    if spot and isinstance(wait, int) and isinstance(run, int) and wait < run:
        problems.append(Problem(source, f"{base}.stoppingCondition.maxWaitTimeInSeconds",
                                f"{wait} is less than maxRuntimeInSeconds {run}",
                                f"at least {run}"))
    if not spot and wait is not None:
        problems.append(Problem(source, f"{base}.stoppingCondition.maxWaitTimeInSeconds",
                                "is only allowed with enableManagedSpotTraining: true",
                                "leave it out, or enable managed spot training"))
    if spot and not _dict(spec.get("checkpointConfig")).get("s3URI"):
        problems.append(Problem(source, f"{base}.checkpointConfig.s3URI",
                                "managed spot training needs a checkpoint S3 URI to resume from",
                                "an s3:// URI"))
    resources = _dict(spec.get("resourceConfig"))
    if not resources.get("instanceGroups"):
        # The model allows 0 (for instance groups); a job without groups needs real values.
        for field, what in (("instanceCount", "instances"), ("volumeSizeInGB", "GB")):
            value = resources.get(field)
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                problems.append(Problem(source, f"{base}.resourceConfig.{field}",
                                        f"{value} {what}", "at least 1"))
    channels = [c.get("channelName") for c in _dicts(spec.get("inputDataConfig"))]
    for i, name in enumerate(channels):
        if name in channels[:i]:
            problems.append(Problem(source, f"{base}.inputDataConfig[{i}].channelName",
                                    f"channel {name!r} is listed twice", "distinct names"))
    metrics = [m.get("name") for m in _dicts(_dict(spec.get("algorithmSpecification"))
                                             .get("metricDefinitions"))]
    for i, name in enumerate(metrics):
        if name in metrics[:i]:
            problems.append(Problem(source, f"{base}.algorithmSpecification."
                                    f"metricDefinitions[{i}].name",
                                    f"metric {name!r} is defined twice", "distinct names"))
    return problems
