"""Point problems found in a rendered spec back at the recipe key that produced the value.

The resource validators report ACK spec paths (``spec.resourceConfig.instanceType``); a user
edits recipe keys (``job.instance_type``), maybe in a base file. Paths not listed here keep
their spec path and name the recipe file.
"""

from __future__ import annotations

import re

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
}
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


def to_recipe_keys(problems: list[Problem], recipe: Recipe) -> list[Problem]:
    """Rewrite spec-path problems as recipe-key problems (the spec path stays in the text)."""
    out = []
    for p in problems:
        key = _recipe_key(p.key) if p.file == recipe.source else None
        if key is None:
            out.append(p)
        else:
            out.append(Problem(recipe.where(key), key, f"{p.message} (rendered as {p.key})",
                               p.allowed))
    return out


def _recipe_key(spec_path: str) -> str | None:
    path = _INDEX.sub("", spec_path)
    while path:
        if path in SPEC_TO_RECIPE:
            return SPEC_TO_RECIPE[path]
        path = path.rpartition(".")[0]
    return None
