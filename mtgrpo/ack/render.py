"""Recipe -> ACK SageMaker resources: template context, template, name by content hash, emit.

The template lays the spec out; this module computes the values that need SageMaker semantics
(channels, metric definitions, hyperparameter strings, tuning ranges, tags) and what the
content-hash name covers (:func:`hash_input`); rendering, naming and emitting are the shared
:mod:`mtgrpo.render.objects` and :mod:`mtgrpo.render.naming`.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

from mtgrpo.contract import TrainerConfig, metric_definitions
from mtgrpo.contract.config import field_specs, format_value, parse_value
from mtgrpo.errors import Problem, UserError
from mtgrpo.recipes import Recipe
from mtgrpo.render import naming
from mtgrpo.render.features import feature_context, security_annotations
from mtgrpo.render.objects import (MANAGED_BY_LABEL, RECIPE_LABEL, SOURCE_ANNOTATION,
                                   SYNC_OPTIONS, SYNC_OPTIONS_ANNOTATION, Resource, emit,
                                   render_object)
from mtgrpo.render.settings import Settings

BACKEND = "sagemaker"
API_VERSION = "sagemaker.services.k8s.aws/v1alpha1"
REGION_ANNOTATION = "services.k8s.aws/region"
DELETION_POLICY_ANNOTATION = "services.k8s.aws/deletion-policy"
TEMPLATES = {"TrainingJob": "trainingjob.yaml.j2",
             "HyperParameterTuningJob": "hyperparametertuningjob.yaml.j2"}

NAME_FIELDS = {"TrainingJob": ("trainingJobName", naming.TRAINING_JOB_NAME_LIMIT),
               "HyperParameterTuningJob": ("hyperParameterTuningJobName",
                                           naming.TUNING_JOB_NAME_LIMIT)}
RANGE_LISTS = {"continuous": "continuousParameterRanges", "integer": "integerParameterRanges",
               "categorical": "categoricalParameterRanges"}


def build_resources(recipe: Recipe, settings: Settings) -> list[Resource]:
    """The resources a recipe renders to: a TrainingJob, or for a recipe with ``tuning:`` a
    HyperParameterTuningJob (plus the TrainingJob when ``tuning.render_training_job``)."""
    if recipe.tuning is None:
        return [_build("TrainingJob", recipe, settings, recipe.trainer)]
    out = [_build("HyperParameterTuningJob", recipe, settings, recipe.trainer)]
    if recipe.tuning["render_training_job"]:
        out.append(_build("TrainingJob", recipe, settings, recipe.trainer))
    return out


def training_job_for(recipe: Recipe, settings: Settings,
                     hyperparameter_overrides: Mapping[str, str]) -> Resource:
    """The recipe's TrainingJob with some trainer hyperparameters replaced by strings (e.g. a
    tuning job's best ``TunedHyperParameters``), named by content hash like any other job.
    Keys SageMaker adds itself (``_tuning_objective_metric``, ``sagemaker_*``) are ignored."""
    specs = field_specs()
    changes: dict[str, Any] = {}
    problems = []
    for key, text in sorted(hyperparameter_overrides.items()):
        if key.startswith("_") or key.startswith("sagemaker_"):
            continue
        if key not in specs:
            problems.append(Problem(recipe.source, f"trainer.{key}",
                                    "not a trainer hyperparameter", "see docs/hyperparameters.md"))
            continue
        try:
            changes[key] = parse_value(key, str(text))
        except UserError as err:
            problems += [Problem(recipe.source, f"trainer.{key}", p.message, p.allowed)
                         for p in err.problems]
    if problems:
        raise UserError(problems)
    try:
        trainer = recipe.trainer.replace(**changes)
    except UserError as err:
        raise UserError([Problem(recipe.source, f"trainer.{p.key}", p.message, p.allowed)
                         for p in err.problems]) from None
    return _build("TrainingJob", recipe, settings, trainer)


def context_for(recipe: Recipe, settings: Settings, trainer: TrainerConfig) -> dict:
    """Everything a template sees (documented in docs/recipes.md)."""
    job = recipe.job
    hyperparameters = trainer.to_hyperparameters()
    ctx: dict[str, Any] = {
        "name": "",
        "namespace": settings.namespace,
        "labels": {MANAGED_BY_LABEL: "mtgrpo", RECIPE_LABEL: recipe.name},
        "annotations": {
            SOURCE_ANNOTATION: recipe.source,
            REGION_ANNOTATION: job["region"],
            DELETION_POLICY_ANNOTATION: settings.deletion_policy,
            SYNC_OPTIONS_ANNOTATION: SYNC_OPTIONS,
        },
        "recipe": recipe.data,
        "job": job,
        "tuning": recipe.tuning,
        "image": job["image_uri"],
        "hyperparameters": hyperparameters,
        "metric_definitions": _metric_definitions(job),
        "channels": _channels(job),
        "tags": [{"key": t["Key"], "value": t["Value"]} for t in job["tags"]],
    }
    ctx["annotations"].update(security_annotations(job))
    ctx.update(feature_context(job, recipe.tuning, ctx["metric_definitions"]))
    if recipe.tuning is not None:
        ranges = recipe.tuning["hyperparameter_ranges"]
        ctx["parameter_ranges"] = _parameter_ranges(ranges)
        ctx["static_hyperparameters"] = {k: v for k, v in hyperparameters.items()
                                         if k not in ranges}
    return ctx


def _build(kind: str, recipe: Recipe, settings: Settings, trainer: TrainerConfig) -> Resource:
    ctx = context_for(recipe, settings, trainer)
    template = TEMPLATES[kind]
    body, shown = render_object(template, kind, settings, ctx, source=recipe.source,
                                allowed=f"apiVersion {API_VERSION}, kind {kind}",
                                parts=("metadata", "spec"))
    name_field, limit = NAME_FIELDS[kind]
    body["spec"].pop(name_field, None)
    body["metadata"].pop("name", None)
    name = naming.job_name(recipe.name, hash_input(body), limit)
    body["metadata"]["name"] = name
    body["spec"][name_field] = name
    return emit(kind, name, body, source=recipe.source, recipe=recipe.name, template=template,
                shown=shown, backend=BACKEND)


def hash_input(body: Mapping[str, Any]) -> dict:
    """What a job name's hash covers: everything that changes what or where the job runs.

    The whole spec except the name field, the apiVersion and kind, the namespace (a new
    namespace is a new object, which must not collide with the old job's name), the region
    annotation and the recipe name (so two recipes whose long names are cut to the same
    prefix never share a job name). The other labels and annotations (deletion policy, sync
    options, source file) can change on a live resource without re-running the job, so they
    are not hashed.
    """
    names = {field_name for field_name, _ in NAME_FIELDS.values()}
    spec = {k: v for k, v in body["spec"].items() if k not in names}
    metadata = body.get("metadata") or {}
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
            "namespace": metadata.get("namespace"),
            "recipe": (metadata.get("labels") or {}).get(RECIPE_LABEL),
            "region": (metadata.get("annotations") or {}).get(REGION_ANNOTATION),
            "spec": spec}


@functools.lru_cache(maxsize=1)
def _our_metrics() -> tuple[tuple[str, str], ...]:
    return tuple((m["Name"], m["Regex"]) for m in metric_definitions())


def _metric_definitions(job: Mapping[str, Any]) -> list[dict[str, str]]:
    ours = [{"name": name, "regex": regex} for name, regex in _our_metrics()]
    extra = [{"name": m["Name"], "regex": m["Regex"]} for m in job["metric_definitions"]]
    return ours + extra


def _channels(job: Mapping[str, Any]) -> list[dict[str, Any]]:
    """SDK ``TrainingInput`` options -> ACK channels, sorted by name, SageMaker's defaults
    rendered (the controller writes compressionType/recordWrapperType back otherwise)."""
    out = []
    for channel in sorted(job["inputs"]):
        opts = job["inputs"][channel]
        s3 = {"s3URI": opts["s3_data"], "s3DataType": opts["s3_data_type"],
              "s3DataDistributionType": opts["distribution"]}
        if opts["attribute_names"]:
            s3["attributeNames"] = list(opts["attribute_names"])
        item: dict[str, Any] = {"channelName": channel, "dataSource": {"s3DataSource": s3},
                                "compressionType": opts["compression"],
                                "recordWrapperType": opts["record_wrapping"]}
        if opts["content_type"]:
            item["contentType"] = opts["content_type"]
        if opts["input_mode"]:
            item["inputMode"] = opts["input_mode"]
        out.append(item)
    return out


def _range_text(value: Any) -> str:
    return format_value(value) if isinstance(value, (bool, int, float)) else str(value)


def _parameter_ranges(ranges: Mapping[str, Mapping[str, Any]]) -> dict[str, list]:
    """SDK-style ranges -> ACK parameterRanges (strings, as the CRD wants), sorted by name."""
    out: dict[str, list] = {}
    for name in sorted(ranges):
        spec = ranges[name]
        kind = spec["type"]
        if kind == "categorical":
            item = {"name": name, "values": [_range_text(v) for v in spec["values"] or []]}
        else:
            item = {"name": name, "minValue": _range_text(spec["min_value"]),
                    "maxValue": _range_text(spec["max_value"]),
                    "scalingType": spec["scaling_type"]}
        out.setdefault(RANGE_LISTS[kind], []).append(item)
    return out
