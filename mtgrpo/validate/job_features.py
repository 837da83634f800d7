"""Rules for the SDK's job features and the secure defaults, on the merged recipe.

The loader has checked types and choices; the service model and the CRDs check the rendered
fields (name patterns, list lengths, fields the installed CRD lacks). These are the rules
between values that neither can say.
"""

from __future__ import annotations

from typing import Any, Mapping

from mtgrpo.errors import Problem, did_you_mean
from mtgrpo.render.features import EXCEPTIONS, LOOSE_SETTINGS, SECURE_DEFAULTS
from mtgrpo.validate.recipe_rules import check_s3_uri

MAX_REASON = 256  # an annotation value is free text, but a reason is one sentence


def check_job_features(recipe_data: Mapping[str, Any], source: str) -> list[Problem]:
    """Every broken rule of the security exceptions, the TensorBoard path and tuning's
    completion criteria and warm start, one Problem each."""
    data = recipe_data if isinstance(recipe_data, Mapping) else {}
    job = data["job"] if isinstance(data.get("job"), Mapping) else {}
    tuning = data.get("tuning") if isinstance(data.get("tuning"), Mapping) else None
    problems = _security(job, source)
    if job.get("tensorboard_output_path") is not None:
        problems += check_s3_uri(job["tensorboard_output_path"], source,
                                 "job.tensorboard_output_path")
    if tuning is not None:
        problems += _completion(tuning, source) + _warm_start(tuning, source)
    return problems


def _security(job: Mapping[str, Any], source: str) -> list[Problem]:
    reasons = job.get("security_exceptions")
    reasons = reasons if isinstance(reasons, Mapping) else {}
    problems = []
    for key, reason in reasons.items():
        where = f"job.security_exceptions.{key}"
        if key not in EXCEPTIONS:
            problems.append(Problem(source, where, "not a secure default that can be turned "
                                    "off" + did_you_mean(str(key), EXCEPTIONS),
                                    ", ".join(EXCEPTIONS)))
        elif key in LOOSE_SETTINGS:
            if not LOOSE_SETTINGS[key][1](job):
                problems.append(Problem(source, where, f"a reason for {key}, but it does not "
                                        "apply", "remove the reason"))
        elif job.get(key, True) is not False:
            problems.append(Problem(source, where, f"a reason for turning {key} off, but it is "
                                    "on", f"remove the reason, or set job.{key}: false"))
        elif not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
            problems.append(Problem(source, where, "the reason is empty or too long",
                                    f"one sentence of 1 to {MAX_REASON} characters"))
    for key in SECURE_DEFAULTS:
        if job.get(key, True) is False and key not in reasons:
            problems.append(Problem(source, f"job.{key}", "turned off without a reason",
                                    f"true, or say why in job.security_exceptions.{key} "
                                    "(rendered as an annotation)"))
    for key, (what, loose) in LOOSE_SETTINGS.items():
        if loose(job) and key not in reasons:
            at = "job.enable_remote_debug" if key == "enable_remote_debug" else "job.subnets"
            problems.append(Problem(source, at, f"{key}: {what}, without a reason",
                                    f"say why in job.security_exceptions.{key} (rendered as "
                                    "an annotation)"))
    return problems


def _completion(tuning: Mapping[str, Any], source: str) -> list[Problem]:
    criteria = tuning.get("completion_criteria")
    if not isinstance(criteria, Mapping):
        return []
    if all(criteria.get(k) is None for k in ("target_objective_metric_value",
                                              "max_number_of_training_jobs_not_improving",
                                              "complete_on_convergence")):
        return [Problem(source, "tuning.completion_criteria", "no criterion is set",
                        "target_objective_metric_value, "
                        "max_number_of_training_jobs_not_improving or complete_on_convergence")]
    return []


def _warm_start(tuning: Mapping[str, Any], source: str) -> list[Problem]:
    config = tuning.get("warm_start")
    parents = config.get("parents") if isinstance(config, Mapping) else None
    if not isinstance(parents, list):
        return []
    problems = []
    for i, name in enumerate(parents):
        if name in parents[:i]:
            problems.append(Problem(source, f"tuning.warm_start.parents[{i}]",
                                    f"{name!r} is listed twice", "distinct tuning job names"))
    return problems
