"""Template values for the SDK's job features and the secure defaults.

The recipe spells them as the SageMaker Python SDK does (``disable_output_compression``,
``tensorboard_output_path``, ``completion_criteria``, ``warm_start``); this module turns them
into the ACK shapes the templates paste in, and the security exceptions into annotations.
"""

from __future__ import annotations

from typing import Any, Mapping

# Where the trainer writes its TensorBoard events in a SageMaker job: next to metrics.jsonl in
# the output data directory (mtgrpo.sagemaker.contract: output_dir = /opt/ml/output/data).
TENSORBOARD_LOCAL_PATH = "/opt/ml/output/data/tensorboard"
SECURITY_EXCEPTION_ANNOTATION = "mtgrpo.io/security-exception-"
SECURE_DEFAULTS = ("enable_network_isolation", "encrypt_inter_container_traffic")
# Loosened settings that are not a secure default turned off, each with what makes it loose:
# shell access into the running container, and a container on the network outside any VPC.
LOOSE_SETTINGS = {
    "enable_remote_debug": ("is on", lambda job: job.get("enable_remote_debug") is True),
    "network_without_vpc": ("enable_network_isolation is off and no subnets are given",
                            lambda job: job.get("enable_network_isolation") is False
                            and not job.get("subnets")),
}
EXCEPTIONS = SECURE_DEFAULTS + tuple(LOOSE_SETTINGS)


def feature_context(job: Mapping[str, Any], tuning: Mapping[str, Any] | None,
                    metric_definitions: list) -> dict[str, Any]:
    """Extra template variables (documented in docs/recipes.md)."""
    chosen = job.get("enable_sagemaker_metrics")
    return {
        # The SDK leaves the field unset, which the API reads as on whenever metric
        # definitions exist (and its PyTorch estimator sets it true): render that explicitly.
        "metrics_time_series": bool(metric_definitions) if chosen is None else chosen,
        "output_compression": "NONE" if job.get("disable_output_compression") else "GZIP",
        "tensorboard_local_path": TENSORBOARD_LOCAL_PATH,
        "completion_criteria": completion_criteria(tuning),
        "warm_start": warm_start(tuning),
    }


def security_annotations(job: Mapping[str, Any]) -> dict[str, str]:
    """One annotation per secure default a recipe turned off, holding the recipe's reason."""
    reasons = job.get("security_exceptions") or {}
    return {SECURITY_EXCEPTION_ANNOTATION + key.replace("_", "-"): reasons[key]
            for key in sorted(reasons) if key in EXCEPTIONS}


def completion_criteria(tuning: Mapping[str, Any] | None) -> dict[str, Any] | None:
    criteria = (tuning or {}).get("completion_criteria") or {}
    out: dict[str, Any] = {}
    if criteria.get("target_objective_metric_value") is not None:
        out["targetObjectiveMetricValue"] = criteria["target_objective_metric_value"]
    if criteria.get("max_number_of_training_jobs_not_improving") is not None:
        out["bestObjectiveNotImproving"] = {
            "maxNumberOfTrainingJobsNotImproving":
                criteria["max_number_of_training_jobs_not_improving"]}
    if criteria.get("complete_on_convergence") is not None:
        out["convergenceDetected"] = {
            "completeOnConvergence": "Enabled" if criteria["complete_on_convergence"]
            else "Disabled"}
    return out or None


def warm_start(tuning: Mapping[str, Any] | None) -> dict[str, Any] | None:
    config = (tuning or {}).get("warm_start")
    if not config:
        return None
    return {"parentHyperParameterTuningJobs": [{"hyperParameterTuningJobName": name}
                                               for name in config["parents"]],
            "warmStartType": config["warm_start_type"]}
