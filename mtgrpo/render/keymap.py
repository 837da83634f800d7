"""Point problems found in a rendered spec back at what produced them: the recipe key that set
the value, or the template that laid the field out.

The resource validators report ACK spec paths (``spec.resourceConfig.instanceType``); a user
edits recipe keys (``job.instance_type``), maybe in a base file. A field the CRD or the API
does not have, or a required one missing, is the template's doing (recipe values enter only
through ``| json`` at places the template chose), so it names the template file and line.
Other paths not listed here keep their spec path and name the recipe file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping

from mtgrpo.errors import Problem
from mtgrpo.recipes import Recipe

_JOB_FIELDS = {
    "roleARN": "job.role",
    "algorithmSpecification.trainingImage": "job.image_uri",
    "algorithmSpecification.trainingInputMode": "job.input_mode",
    "algorithmSpecification.metricDefinitions": "job.metric_definitions",
    "resourceConfig.instanceType": "job.instance_type",
    "resourceConfig.instanceCount": "job.instance_count",
    "resourceConfig.volumeSizeInGB": "job.volume_size",
    "resourceConfig.volumeKMSKeyID": "job.volume_kms_key",
    "resourceConfig.keepAlivePeriodInSeconds": "job.keep_alive_period_in_seconds",
    "stoppingCondition.maxRuntimeInSeconds": "job.max_run",
    "stoppingCondition.maxWaitTimeInSeconds": "job.max_wait",
    "outputDataConfig.s3OutputPath": "job.output_path",
    "outputDataConfig.kmsKeyID": "job.output_kms_key",
    "checkpointConfig.s3URI": "job.checkpoint_s3_uri",
    "checkpointConfig.localPath": "job.checkpoint_local_path",
    "vpcConfig.subnets": "job.subnets",
    "vpcConfig.securityGroupIDs": "job.security_group_ids",
    "retryStrategy.maximumRetryAttempts": "job.max_retry_attempts",
    "environment": "job.environment",
    "tags": "job.tags",
    "inputDataConfig": "job.inputs",
    "outputDataConfig.compressionType": "job.disable_output_compression",
    "infraCheckConfig": "job.enable_infra_check",
    "remoteDebugConfig": "job.enable_remote_debug",
    "tensorBoardOutputConfig": "job.tensorboard_output_path",
    "algorithmSpecification.enableSageMakerMetricsTimeSeries": "job.enable_sagemaker_metrics",
    "hyperParameters": "trainer",
    "staticHyperParameters": "trainer",
    "enableNetworkIsolation": "job.enable_network_isolation",
    "enableInterContainerTrafficEncryption": "job.encrypt_inter_container_traffic",
    "enableManagedSpotTraining": "job.use_spot_instances",
    "debugHookConfig": "job.debugger_hook_config",
    "profilerConfig": "job.disable_profiler",
}
# Hyperparameter maps: the key is the trainer field (``spec.hyperParameters.seed``).
_HYPERPARAMETERS = re.compile(r"^spec\.(?:trainingJobDefinition\.staticHyperParameters|"
                              r"hyperParameters)\.([A-Za-z0-9_]+)$")
# What only a template can cause (messages of crd_schema and service_model).
_TEMPLATE_MESSAGES = ("unknown field", "required field is missing", "not a member of",
                      "required by the SageMaker API")
SPEC_TO_RECIPE: dict[str, str] = {
    **{f"spec.{k}": v for k, v in _JOB_FIELDS.items()},
    **{f"spec.trainingJobDefinition.{k}": v for k, v in _JOB_FIELDS.items()},
    "spec.hyperParameterTuningJobConfig.resourceLimits.maxNumberOfTrainingJobs": "tuning.max_jobs",
    "spec.hyperParameterTuningJobConfig.resourceLimits.maxParallelTrainingJobs":
        "tuning.max_parallel_jobs",
    "spec.hyperParameterTuningJobConfig.strategy": "tuning.strategy",
    "spec.hyperParameterTuningJobConfig.hyperParameterTuningJobObjective":
        "tuning.objective_metric_name",
    "spec.hyperParameterTuningJobConfig.parameterRanges": "tuning.hyperparameter_ranges",
    "spec.hyperParameterTuningJobConfig.trainingJobEarlyStoppingType":
        "tuning.early_stopping_type",
    "spec.hyperParameterTuningJobConfig.tuningJobCompletionCriteria":
        "tuning.completion_criteria",
    "spec.hyperParameterTuningJobConfig.tuningJobCompletionCriteria."
    "targetObjectiveMetricValue": "tuning.completion_criteria.target_objective_metric_value",
    "spec.hyperParameterTuningJobConfig.tuningJobCompletionCriteria.bestObjectiveNotImproving":
        "tuning.completion_criteria.max_number_of_training_jobs_not_improving",
    "spec.hyperParameterTuningJobConfig.tuningJobCompletionCriteria.convergenceDetected":
        "tuning.completion_criteria.complete_on_convergence",
    "spec.warmStartConfig": "tuning.warm_start",
    "spec.warmStartConfig.parentHyperParameterTuningJobs": "tuning.warm_start.parents",
    "spec.warmStartConfig.warmStartType": "tuning.warm_start.warm_start_type",
}
_INDEX = re.compile(r"\[[0-9]+\]")


def to_recipe_keys(problems: list[Problem], recipe: Recipe,
                   resources: Iterable = ()) -> list[Problem]:
    """Rewrite spec-path problems as recipe-key problems (the spec path stays in the text), or
    as the template's (file and line) when only the template can have caused them."""
    templates = {r.kind: r.template for r in resources if getattr(r, "template", "")}
    out = []
    for p in problems:
        if p.file != recipe.source:
            out.append(p)
            continue
        kind = p.message.split(":", 1)[0]
        key = _recipe_key(p.key)
        # A field only a value of the recipe puts there (e.g. a completion criterion the
        # installed CRD lacks) is the recipe's; any other such field is the template's.
        if kind in templates and any(m in p.message for m in _TEMPLATE_MESSAGES) and not (
                "unknown field" in p.message and key is not None and _sets(recipe.data, key)):
            out.append(_template_problem(p, templates[kind], recipe))
            continue
        if key is None:
            out.append(p)
        else:
            out.append(Problem(recipe.where(key), key, f"{p.message} (rendered as {p.key})",
                               p.allowed))
    return out


def _sets(data: Mapping, key: str) -> bool:
    """Whether the merged recipe spells ``key`` (dotted, no indices) itself."""
    node: object = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _template_problem(p: Problem, template: str, recipe: Recipe) -> Problem:
    """The problem named by the template file, with the line that spells the field if one
    line does."""
    field = re.sub(r"\[[0-9]+\]$", "", p.key).rpartition(".")[2]
    where = ""
    try:
        file = Path(template) if Path(template).is_absolute() else _root(recipe) / template
        text = file.read_text(encoding="utf-8")
        lines = [i for i, line in enumerate(text.splitlines(), 1)
                 if re.match(rf"\s*-?\s*{re.escape(field)}\s*:", line)]
        where = f"line {lines[0]}: " if len(lines) == 1 else ""
    except (OSError, UnicodeDecodeError):
        pass
    # Not naming the recipe: the same template mistake in every recipe's render is one line.
    return Problem(template, p.key, f"{where}{p.message}", p.allowed)


def _root(recipe: Recipe) -> Path:
    """The repository root: the recipe path minus its source (``recipes/x.yaml``)."""
    path = Path(recipe.path)
    for _ in Path(recipe.source).parts:
        path = path.parent
    return path


def _recipe_key(spec_path: str) -> str | None:
    match = _HYPERPARAMETERS.match(spec_path)
    if match:
        return f"trainer.{match.group(1)}"
    path = _INDEX.sub("", spec_path)
    while path:
        if path in SPEC_TO_RECIPE:
            return SPEC_TO_RECIPE[path]
        path = path.rpartition(".")[0]
    return None
