"""The recipe schema as data: every key, its type, default, allowed values and help.

This module checks *shape* only (unknown keys with a did-you-mean, wrong types, missing required
values, values outside a fixed list) and fills in defaults. Rules across fields (spot needs
max_wait, ARNs, S3 URIs, limits, secrets) live in :mod:`mtgrpo.validate`. The ``trainer:``
section is checked by the trainer's own schema, :class:`mtgrpo.contract.TrainerConfig`.

Key names are the SageMaker Python SDK's own (``Estimator``, ``TrainingInput``,
``HyperparameterTuner``), so a notebook's arguments move into a recipe unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from mtgrpo.contract.metrics import DEFAULT_OBJECTIVE
from mtgrpo.errors import Problem, did_you_mean


@dataclass(frozen=True)
class Key:
    """One recipe key. ``kind`` names a checker in ``_CHECKERS``."""

    kind: str
    help: str
    default: Any = None
    required: bool = False
    choices: tuple = ()
    keys: Mapping[str, "Key"] | None = None  # kind "section": the nested section's keys


# -- sections -----------------------------------------------------------------------------------

TOP: dict[str, Key] = {
    "name": Key("slug", "Recipe slug; job names are `<name>-<hash>`.", required=True),
    "description": Key("str", "Free text for reviewers; not rendered.", default=""),
    "extends": Key("extends", "Base file(s) deep-merged under this recipe, later wins; paths "
                              "relative to the file that names them.", default=[]),
    "trainer": Key("mapping", "Trainer hyperparameters (docs/hyperparameters.md).",
                   required=True),
    "job": Key("mapping", "The SageMaker training job, in the SDK Estimator's argument names.",
               required=True),
    "tuning": Key("mapping", "Optional hyperparameter tuning job (SDK HyperparameterTuner).",
                  default=None),
    # The backends (mtgrpo/backends/all.py) add ``backend``'s choices and their own sections:
    # mtgrpo.recipes.loader.top_keys.
    "backend": Key("str", "Where the recipe runs: one of the registered backends "
                          "(docs/architecture.md).", default=None),
}

JOB: dict[str, Key] = {
    "image_uri": Key("str", "Trainer image, best pinned as `<repo>@sha256:<digest>`.",
                     required=True),
    "role": Key("str", "IAM role ARN SageMaker assumes for the job.", required=True),
    "instance_type": Key("str", "Instance type, e.g. ml.g5.2xlarge.", required=True),
    "instance_count": Key("int", "Number of instances.", default=1),
    "volume_size": Key("int", "EBS volume per instance, GB.", default=30),
    "volume_kms_key": Key("str", "KMS key for the instance volumes.", default=None),
    "max_run": Key("int", "Maximum run time, seconds.", default=86400),
    "use_spot_instances": Key("bool", "Managed spot training (needs max_wait and "
                                      "checkpoint_s3_uri).", default=False),
    "max_wait": Key("int", "Maximum time including spot waits, seconds (>= max_run).",
                    default=None),
    "checkpoint_s3_uri": Key("str", "S3 prefix synced with checkpoint_local_path.",
                             default=None),
    "checkpoint_local_path": Key("str", "Local checkpoint directory.",
                                 default="/opt/ml/checkpoints"),
    "output_path": Key("str", "S3 prefix for model.tar.gz and output.", required=True),
    "output_kms_key": Key("str", "KMS key for the output; empty = SageMaker's default.",
                          default=""),
    "subnets": Key("list_str", "VPC subnet ids (with security_group_ids).", default=[]),
    "security_group_ids": Key("list_str", "VPC security group ids.", default=[]),
    "enable_network_isolation": Key("bool", "No network access from the container (on by "
                                            "default; off needs job.security_exceptions).",
                                    default=True),
    "encrypt_inter_container_traffic": Key("bool", "Encrypt traffic between instances (on by "
                                                   "default; off needs "
                                                   "job.security_exceptions).", default=True),
    "enable_sagemaker_metrics": Key("bool", "Publish metrics as SageMaker time series "
                                            "(unset: on, as the SDK does when metrics are "
                                            "defined).", default=None),
    "environment": Key("map_str", "Container environment variables (no secrets).", default={}),
    "tags": Key("tags", "Tags: a mapping or the SDK's [{Key, Value}] list.", default=[]),
    "max_retry_attempts": Key("int", "Retries after an internal SageMaker error.",
                              default=None),
    "keep_alive_period_in_seconds": Key("int", "Warm pool keep-alive, seconds.", default=None),
    "disable_profiler": Key("bool", "Leave SageMaker's profiler off (true) or on (false).",
                            default=True),
    "debugger_hook_config": Key("debugger", "false = off, or {s3_output_path, local_path, "
                                            "hook_parameters}.", default=False),
    "input_mode": Key("str", "Default channel input mode.", default="File",
                      choices=("File", "FastFile", "Pipe")),
    "inputs": Key("inputs", "Channel -> S3 URI or TrainingInput options.", required=True),
    "region": Key("str", "AWS region of the job (the region annotation).", required=True),
    "metric_definitions": Key("metric_definitions", "Extra [{Name, Regex}] beyond the "
                                                    "trainer's own.", default=[]),
    # The fit planner (mtgrpo/plan, docs/plan.md); not rendered.
    "skip_fit_check": Key("str", "Reason to skip the fit planner's memory check (render "
                                 "refuses a recipe estimated not to fit otherwise); the "
                                 "batch-shape check always runs.", default=None),
}

INPUT: dict[str, Key] = {
    "s3_data": Key("str", "S3 URI of the channel.", required=True),
    "distribution": Key("str", "How the data is spread over instances.",
                        default="FullyReplicated",
                        choices=("FullyReplicated", "ShardedByS3Key")),
    "compression": Key("str", "Compression of the objects.", default="None",
                       choices=("None", "Gzip")),
    "content_type": Key("str", "MIME type of the data.", default=None),
    "record_wrapping": Key("str", "Record wrapper.", default="None",
                           choices=("None", "RecordIO")),
    "s3_data_type": Key("str", "S3 data type.", default="S3Prefix",
                        choices=("S3Prefix", "ManifestFile", "AugmentedManifestFile")),
    "input_mode": Key("str", "Overrides job.input_mode for this channel.", default=None,
                      choices=("File", "FastFile", "Pipe")),
    "attribute_names": Key("list_str", "Attributes of an augmented manifest.", default=[]),
}

DEBUGGER: dict[str, Key] = {
    "s3_output_path": Key("str", "Where tensors are saved.", required=True),
    "local_path": Key("str", "Local tensor directory.", default="/opt/ml/output/tensors"),
    "hook_parameters": Key("map_str", "Debugger hook parameters.", default={}),
}

TUNING: dict[str, Key] = {
    "objective_metric_name": Key("str", "Metric to optimise (one of the trainer's metrics or "
                                        "job.metric_definitions).", default=DEFAULT_OBJECTIVE),
    "objective_type": Key("str", "Direction.", default="Maximize",
                          choices=("Maximize", "Minimize")),
    "hyperparameter_ranges": Key("ranges", "Trainer hyperparameter -> range.", required=True),
    "max_jobs": Key("int", "Training jobs in total.", required=True),
    "max_parallel_jobs": Key("int", "Training jobs at once.", default=1),
    "strategy": Key("str", "Search strategy.", default="Bayesian",
                    choices=("Bayesian", "Random", "Hyperband", "Grid")),
    "early_stopping_type": Key("str", "Stop unpromising trials early.", default="Off",
                               choices=("Off", "Auto")),
    "render_training_job": Key("bool", "Also render a plain TrainingJob with the static values "
                                       "(false: only the tuning job).", default=False),
}

RANGE: dict[str, Key] = {
    "type": Key("str", "Range type.", required=True,
                choices=("continuous", "integer", "categorical")),
    "min_value": Key("number", "Lower bound (continuous, integer).", default=None),
    "max_value": Key("number", "Upper bound (continuous, integer).", default=None),
    "scaling_type": Key("str", "How values are searched.", default="Auto",
                        choices=("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")),
    "values": Key("list_scalar", "Categorical values.", default=None),
}

# -- job features and security exceptions (issue 16) --------------------------------------------
# The SDK Estimator's own argument names; rules between values live in
# mtgrpo/validate/job_features.py, the rendering in the templates.

JOB_FEATURES: dict[str, Key] = {
    "enable_infra_check": Key("bool", "Infrastructure health checks before training "
                                      "(infraCheckConfig).", default=False),
    "enable_remote_debug": Key("bool", "SSM access into the running container "
                                       "(remoteDebugConfig).", default=False),
    "disable_output_compression": Key("bool", "Upload the model uncompressed "
                                              "(outputDataConfig.compressionType NONE).",
                                      default=False),
    "tensorboard_output_path": Key("str", "S3 prefix SageMaker uploads the trainer's "
                                          "TensorBoard events to while the job runs.",
                                   default=None),
    "security_exceptions": Key("map_str", "Setting -> reason, for each secure default turned "
                                          "off (enable_network_isolation, "
                                          "encrypt_inter_container_traffic); rendered as an "
                                          "annotation.", default={}),
}
JOB.update(JOB_FEATURES)

COMPLETION_CRITERIA: dict[str, Key] = {
    "target_objective_metric_value": Key("number", "Stop once a trial reaches this objective "
                                                   "value.", default=None),
    "max_number_of_training_jobs_not_improving": Key(
        "int", "Stop after this many trials without a better objective.", default=None),
    "complete_on_convergence": Key("bool", "Stop when SageMaker detects convergence.",
                                   default=None),
}

WARM_START: dict[str, Key] = {
    "warm_start_type": Key("str", "How the parents' results are reused.", required=True,
                           choices=("IdenticalDataAndAlgorithm", "TransferLearning")),
    "parents": Key("list_str", "Names of completed or stopped parent tuning jobs (1 to 5).",
                   required=True),
}

TUNING_FEATURES: dict[str, Key] = {
    "completion_criteria": Key("completion_criteria", "SDK TuningJobCompletionCriteriaConfig: "
                                                      "{target_objective_metric_value, "
                                                      "max_number_of_training_jobs_not_"
                                                      "improving, complete_on_convergence}.",
                               default=None),
    "warm_start": Key("warm_start", "SDK WarmStartConfig: {warm_start_type, parents}.",
                      default=None),
}
TUNING.update(TUNING_FEATURES)


def _completion_criteria(c: "Checker", v: Any, path: str, spec: Key) -> Any:
    return c.section(v, COMPLETION_CRITERIA, path, "completion criteria")


def _warm_start(c: "Checker", v: Any, path: str, spec: Key) -> Any:
    return c.section(v, WARM_START, path, "warm start options")


METRIC: dict[str, Key] = {
    "Name": Key("str", "Metric name.", required=True),
    "Regex": Key("str", "Regex whose first group is the value.", required=True),
}

TAG: dict[str, Key] = {
    "Key": Key("str", "Tag key.", required=True),
    "Value": Key("str", "Tag value.", required=True),
}


# -- checking -----------------------------------------------------------------------------------

class Checker:
    """Walks one recipe, collecting problems and building the normalised (defaulted) copy.

    ``where(path)`` names the file that set ``path`` (recipes merge several files).
    """

    def __init__(self, where: Callable[[str], str]):
        self.where = where
        self.problems: list[Problem] = []

    def problem(self, path: str, message: str, allowed: str = "") -> None:
        self.problems.append(Problem(self.where(path), path, message, allowed))

    def section(self, value: Any, keys: Mapping[str, Key], path: str, what: str) -> dict:
        """Check a mapping against ``keys``; return it with defaults filled in."""
        if not isinstance(value, Mapping):
            self.problem(path, f"must be a mapping, got {_type_name(value)}",
                         f"a mapping of {what}")
            return {}
        out: dict = {}
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            spec = keys.get(key) if isinstance(key, str) else None
            if spec is None:
                self.problem(sub, f"unknown key in {what}" + did_you_mean(str(key), keys),
                             ", ".join(sorted(keys)))
                continue
            if item is None and not spec.required:
                continue  # null = unset: falls back to the default (drops a base file's value)
            checked = _CHECKERS[spec.kind](self, item, sub, spec)
            if checked is not _BAD:
                if spec.choices and checked not in spec.choices:
                    self.problem(sub, f"invalid value {checked!r}",
                                 "one of " + ", ".join(map(str, spec.choices)))
                else:
                    out[key] = checked
        for key, spec in keys.items():
            sub = f"{path}.{key}" if path else key
            if key in out or any(p.key == sub for p in self.problems):
                continue
            if spec.required:
                self.problem(sub, "required value is missing", spec.help)
            else:
                out[key] = _copy(spec.default)
        return out


_BAD = object()


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(
        type(value), type(value).__name__)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _str(c: Checker, v: Any, path: str, spec: Key) -> Any:
    if isinstance(v, str):
        return v
    if isinstance(v, bool) and ("Off" if v is False else "On") in spec.choices:
        return "Off" if v is False else "On"  # YAML 1.1 reads a bare Off as false
    allowed = ("one of " + ", ".join(spec.choices)) if spec.choices else "a string"
    c.problem(path, f"must be a string, got {_type_name(v)}", allowed)
    return _BAD


def _slug(c: Checker, v: Any, path: str, spec: Key) -> Any:
    import re
    if not isinstance(v, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", v) \
            or len(v) > 50:
        shown = repr(v) if isinstance(v, str) else _type_name(v)
        c.problem(path, f"invalid recipe name {shown}",
                  "lower-case letters, digits and '-', starting and ending with a letter or "
                  "digit, at most 50 characters")
        return _BAD
    return v


def _int(c: Checker, v: Any, path: str, spec: Key) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    c.problem(path, f"must be an integer, got {_type_name(v)}", "an integer")
    return _BAD


def _number(c: Checker, v: Any, path: str, spec: Key) -> Any:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v
    c.problem(path, f"must be a number, got {_type_name(v)}", "a number")
    return _BAD


def _bool(c: Checker, v: Any, path: str, spec: Key) -> Any:
    if isinstance(v, bool):
        return v
    c.problem(path, f"must be true or false, got {_type_name(v)}", "true or false")
    return _BAD


def _mapping(c: Checker, v: Any, path: str, spec: Key) -> Any:
    if isinstance(v, Mapping):
        return dict(v)
    c.problem(path, f"must be a mapping, got {_type_name(v)}", "a mapping")
    return _BAD


def _extends(c: Checker, v: Any, path: str, spec: Key) -> Any:
    return v  # already resolved by the loader


def _list_str(c: Checker, v: Any, path: str, spec: Key) -> Any:
    if not isinstance(v, list):
        c.problem(path, f"must be a list, got {_type_name(v)}", "a list of strings")
        return _BAD
    ok = True
    for i, item in enumerate(v):
        if not isinstance(item, str):
            c.problem(f"{path}[{i}]", f"must be a string, got {_type_name(item)}", "a string")
            ok = False
    return list(v) if ok else _BAD


def _list_scalar(c: Checker, v: Any, path: str, spec: Key) -> Any:
    if not isinstance(v, list):
        c.problem(path, f"must be a list, got {_type_name(v)}", "a list of values")
        return _BAD
    for i, item in enumerate(v):
        if not isinstance(item, (str, int, float)):
            c.problem(f"{path}[{i}]", f"must be a string, number or boolean, got "
                                      f"{_type_name(item)}", "a scalar value")
            return _BAD
    return list(v)


def _map_str(c: Checker, v: Any, path: str, spec: Key) -> Any:
    if not isinstance(v, Mapping):
        c.problem(path, f"must be a mapping, got {_type_name(v)}", "a mapping of strings")
        return _BAD
    ok = True
    for key, item in v.items():
        if not isinstance(key, str) or not isinstance(item, str):
            c.problem(f"{path}.{key}", f"must be a string, got {_type_name(item)}",
                      "a string (quote numbers and booleans: \"1\", \"true\")")
            ok = False
    return dict(v) if ok else _BAD


def _tags(c: Checker, v: Any, path: str, spec: Key) -> Any:
    if isinstance(v, Mapping):
        as_map = _map_str(c, v, path, spec)
        return _BAD if as_map is _BAD else [{"Key": k, "Value": as_map[k]} for k in as_map]
    if not isinstance(v, list):
        c.problem(path, f"must be a mapping or a list, got {_type_name(v)}",
                  "{key: value} or [{Key, Value}]")
        return _BAD
    return [c.section(item, TAG, f"{path}[{i}]", "tag fields") for i, item in enumerate(v)]


def _metric_definitions(c: Checker, v: Any, path: str, spec: Key) -> Any:
    if not isinstance(v, list):
        c.problem(path, f"must be a list, got {_type_name(v)}", "a list of {Name, Regex}")
        return _BAD
    return [c.section(item, METRIC, f"{path}[{i}]", "metric definition fields")
            for i, item in enumerate(v)]


def _inputs(c: Checker, v: Any, path: str, spec: Key) -> Any:
    if not isinstance(v, Mapping):
        c.problem(path, f"must be a mapping, got {_type_name(v)}",
                  "channel -> S3 URI or TrainingInput options")
        return _BAD
    out = {}
    for channel, item in v.items():
        sub = f"{path}.{channel}"
        if item is None:
            continue  # `channel: null` unsets a base file's channel (docs/recipes.md)
        if isinstance(item, str):
            item = {"s3_data": item}
        out[str(channel)] = c.section(item, INPUT, sub, "channel options")
    return out


def _debugger(c: Checker, v: Any, path: str, spec: Key) -> Any:
    if v is False:
        return False
    if isinstance(v, Mapping):
        return c.section(v, DEBUGGER, path, "debugger hook options")
    c.problem(path, f"must be false or a mapping, got {_type_name(v)}",
              "false, or {s3_output_path, local_path, hook_parameters}")
    return _BAD


def _section(c: Checker, v: Any, path: str, spec: Key) -> Any:
    return c.section(v, spec.keys or {}, path, f"{path} keys")


def _ranges(c: Checker, v: Any, path: str, spec: Key) -> Any:
    if not isinstance(v, Mapping) or not v:
        c.problem(path, f"must be a non-empty mapping, got {_type_name(v)}",
                  "trainer hyperparameter -> {type, min_value, max_value, scaling_type} or "
                  "{type: categorical, values}")
        return _BAD
    return {str(name): c.section(item, RANGE, f"{path}.{name}", "range fields")
            for name, item in v.items()}


_CHECKERS: dict[str, Callable[[Checker, Any, str, Key], Any]] = {
    "str": _str, "slug": _slug, "int": _int, "number": _number, "bool": _bool,
    "mapping": _mapping, "extends": _extends, "list_str": _list_str,
    "list_scalar": _list_scalar, "map_str": _map_str, "tags": _tags,
    "metric_definitions": _metric_definitions, "inputs": _inputs, "debugger": _debugger,
    "ranges": _ranges, "section": _section,
    "completion_criteria": _completion_criteria, "warm_start": _warm_start,
}


# -- public API for a backend's own sections ---------------------------------------------------
# A backend's package checks its section with Checker.section and may add key kinds of its own.
BAD = _BAD  # a checker's return value for a refused value (a problem has been reported)
type_name = _type_name


def register_checker(kind: str, checker: Callable[[Checker, Any, str, Key], Any]) -> None:
    """Make ``kind`` usable in any section's ``Key`` (a backend's own value types)."""
    _CHECKERS.setdefault(kind, checker)
