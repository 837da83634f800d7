"""``check_recipe``: the rules SageMaker applies at create time, checked on the typed recipe.

The rules read the one typed model (:class:`mtgrpo.recipes.Recipe`: sections checked by the
schema, defaults filled in), so choices and defaults are written once, in
:mod:`mtgrpo.recipes.schema`. The schema has already refused unknown keys, wrong basic types,
values outside a fixed list and missing required values; these are the rules between values.
Keys are in the SageMaker Python SDK's vocabulary (``job.max_run``,
``tuning.hyperparameter_ranges``), as the recipe spells them.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

from mtgrpo.contract import REQUIRED_CHANNELS, metric_definitions
from mtgrpo.contract.channels import CHANNEL_NAME_PATTERN, CORPUS
from mtgrpo.contract.config import (TrainerConfig, field_specs, field_type, format_value,
                                    parse_value)
from mtgrpo.contract.task_spec import uses_corpus
from mtgrpo.errors import Problem, UserError, did_you_mean
from mtgrpo.recipes import schema
from mtgrpo.recipes.loader import Recipe, recipe_from_data, relocate
from mtgrpo.validate.regions import check_region
from mtgrpo.validate.secrets import check_secrets

MAX_RUN_LIMIT = 28 * 24 * 3600  # SageMaker's MaxRuntimeInSeconds ceiling: 28 days
MAX_HYPERPARAMETERS, MAX_HP_KEY, MAX_HP_VALUE = 100, 256, 2500
MAX_METRICS, MAX_METRIC_NAME, MAX_METRIC_REGEX = 40, 255, 500
MAX_RANGES, MAX_CATEGORICAL_VALUES = 30, 30
MAX_CHANNELS = 20
MAX_ENV, MAX_ENV_TEXT = 100, 512
RANGE_TYPES = schema.RANGE["type"].choices

ROLE_ARN = re.compile(r"^arn:aws[-a-z]*:iam::\d{12}:role/[A-Za-z0-9_+=,.@/-]+$")
# s3://bucket[/key]: bucket names are 3-63 lower-case letters, digits, '.' and '-'.
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?:/(?P<key>.*))?$")
SUBNET = re.compile(r"^subnet-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
ENV_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def check_recipe(recipe: Recipe | Mapping[str, Any], *, source: str | None = None
                 ) -> list[Problem]:
    """Every rule the recipe breaks, one Problem each (file, key path, what, allowed).

    ``recipe`` is the typed recipe (``read_recipe``/``load_recipe``), possibly partial: its
    schema problems are the loader's to report. A plain mapping (a merged recipe in memory) is
    typed first with ``recipe_from_data``, and its schema problems are included. A rule never
    reports a value the schema refused (no second line for one mistake). Problems name the file
    that set the key.
    """
    schema_problems: list[Problem] = []
    if not isinstance(recipe, Recipe):
        recipe = recipe_from_data(recipe if isinstance(recipe, Mapping) else {},
                                  source=source or "")
        schema_problems = list(recipe.problems)
    source = recipe.source
    job = recipe.job
    tuning = recipe.tuning
    config = recipe.trainer
    problems = _stopping(job, source)
    problems += _locations(job, source)
    problems += check_region(job.get("region"), source, "job.region")
    written = _mapping(_mapping(recipe.data.get("job")).get("inputs"))
    problems += _channels(job, source, written, config)
    problems += _environment(job, source)
    metric_names, metric_problems = _metrics(job, source)
    problems += metric_problems
    tuned = _range_names(tuning)
    if config is not None:
        problems += _hyperparameters(config, tuned, source)
    if tuning is not None:
        problems += _tuning(tuning, metric_names, config, source)
    problems += check_secrets(dict(recipe.data), source)
    from mtgrpo.validate.job_features import check_job_features  # imports check_s3_uri here
    problems += check_job_features(recipe.data, source)
    own = []  # the recipe's backend adds its own rules (mtgrpo/backends/all.py)
    if recipe.backend:
        from mtgrpo import backends

        own = backends.of(recipe).check_recipe(recipe)
    return schema_problems + relocate([p for p in problems if not recipe.invalid(p.key)],
                                      recipe) + own


# -- helpers ------------------------------------------------------------------------------------

def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_s3_uri(value: Any, source: str, key: str) -> list[Problem]:
    """One problem if ``value`` is not an ``s3://bucket/key`` URI SageMaker accepts."""
    allowed = "s3://<bucket>/<prefix>, bucket 3-63 lower-case letters, digits, '.' or '-'"
    if not isinstance(value, str):
        return [Problem(source, key, f"must be an S3 URI, got {type(value).__name__}", allowed)]
    match = S3_URI.fullmatch(value)
    if not match or ".." in match.group("bucket") or len(value) > 1024:
        return [Problem(source, key, f"{value!r} is not a valid S3 URI", allowed)]
    return []


# -- job ----------------------------------------------------------------------------------------

def _stopping(job: Mapping[str, Any], source: str) -> list[Problem]:
    problems = []
    max_run = _int(job.get("max_run"))
    if max_run is not None and not 1 <= max_run <= MAX_RUN_LIMIT:
        problems.append(Problem(source, "job.max_run", f"{max_run} seconds is out of range",
                                f"1 to {MAX_RUN_LIMIT} seconds (28 days)"))
    spot = job.get("use_spot_instances") is True
    max_wait = job.get("max_wait")
    if spot:
        if max_wait is None:
            problems.append(Problem(source, "job.max_wait", "managed spot training needs "
                                    "max_wait", f"seconds >= max_run ({max_run})"))
        elif _int(max_wait) is not None and max_run is not None and max_wait < max_run:
            problems.append(Problem(source, "job.max_wait", f"{max_wait} is less than max_run "
                                    f"{max_run}", f"seconds >= max_run ({max_run})"))
        if not job.get("checkpoint_s3_uri"):
            problems.append(Problem(source, "job.checkpoint_s3_uri", "managed spot training "
                                    "needs a checkpoint S3 URI to resume after an interruption",
                                    "an s3:// URI"))
        if job.get("keep_alive_period_in_seconds"):
            problems.append(Problem(source, "job.keep_alive_period_in_seconds", "warm pools "
                                    "cannot be used with managed spot training",
                                    "0 or leave it out when use_spot_instances is true"))
    elif max_wait is not None:
        problems.append(Problem(source, "job.max_wait", "is only allowed with "
                                "use_spot_instances: true", "leave it out, or enable spot"))
    return problems


def _locations(job: Mapping[str, Any], source: str) -> list[Problem]:
    problems = []
    role = job.get("role")
    if role is not None and (not isinstance(role, str) or not ROLE_ARN.fullmatch(role)
                             or len(role) > 2048):
        problems.append(Problem(source, "job.role", f"{role!r} is not an IAM role ARN",
                                "arn:aws:iam::<12-digit account>:role/<name>"))
    for key in ("output_path", "checkpoint_s3_uri"):
        if job.get(key) is not None:
            problems += check_s3_uri(job[key], source, f"job.{key}")
    local = job.get("checkpoint_local_path")
    if local is not None and (not isinstance(local, str) or not local.startswith("/")):
        problems.append(Problem(source, "job.checkpoint_local_path", f"{local!r} is not an "
                                "absolute path", "an absolute path such as /opt/ml/checkpoints"))
    subnets, groups = job.get("subnets"), job.get("security_group_ids")
    for key, value, pattern, limit, example in (
            ("subnets", subnets, SUBNET, 16, "subnet-0123456789abcdef0"),
            ("security_group_ids", groups, SECURITY_GROUP, 5, "sg-0123456789abcdef0")):
        if not value:
            continue  # unset (the loader's default is an empty list)
        if not isinstance(value, list) or len(value) > limit:
            problems.append(Problem(source, f"job.{key}", "must be a list of 1 to "
                                    f"{limit} ids", f"ids like {example}"))
            continue
        for i, item in enumerate(value):
            if not isinstance(item, str) or not pattern.fullmatch(item):
                problems.append(Problem(source, f"job.{key}[{i}]", f"{item!r} is not a valid "
                                        "id", f"ids like {example}"))
    if bool(subnets) != bool(groups):
        missing = "subnets" if groups else "security_group_ids"
        problems.append(Problem(source, f"job.{missing}", "a VPC needs both subnets and "
                                "security_group_ids", "set both or neither"))
    return problems


def _channels(job: Mapping[str, Any], source: str,
              written: Mapping[str, Any] | None = None,
              config: TrainerConfig | None = None) -> list[Problem]:
    """``written``: the inputs as the recipe spells them, so a channel given as a bare URI is
    named by its channel key (the typed model holds every channel as options). ``config``: a
    task without a search tool (docs/tasks.md) reads no corpus."""
    inputs = job.get("inputs")
    if not isinstance(inputs, Mapping):
        return []  # the loader reports a missing or mistyped `inputs`
    problems = []
    if not 1 <= len(inputs) <= MAX_CHANNELS:
        problems.append(Problem(source, "job.inputs", f"{len(inputs)} channels",
                                f"1 to {MAX_CHANNELS} channels"))
    # A task without a search tool (docs/tasks.md) reads no corpus.
    optional = () if config is None or uses_corpus(config.task_tools) else (CORPUS,)
    for name in REQUIRED_CHANNELS:
        if name not in inputs and name not in optional:
            problems.append(Problem(source, f"job.inputs.{name}", "required channel is missing",
                                    "channels " + ", ".join(REQUIRED_CHANNELS)
                                    + " are required"))
    for name, value in inputs.items():
        key = f"job.inputs.{name}"
        if (not isinstance(name, str) or len(name) > 64
                or not re.fullmatch(CHANNEL_NAME_PATTERN, name)):
            problems.append(Problem(source, key, "invalid channel name",
                                    "1-64 letters, digits, '.', '-' or '_'"))
        if isinstance(value, Mapping):
            if "s3_data" in value:  # the loader reports a missing one
                bare = isinstance((written or {}).get(name), str)
                problems += check_s3_uri(value["s3_data"], source,
                                         key if bare else f"{key}.s3_data")
        else:
            problems += check_s3_uri(value, source, key)
    return problems


def _environment(job: Mapping[str, Any], source: str) -> list[Problem]:
    env = job.get("environment")
    if not isinstance(env, Mapping) or not env:
        return []
    problems = []
    if len(env) > MAX_ENV:
        problems.append(Problem(source, "job.environment", f"{len(env)} entries",
                                f"at most {MAX_ENV} entries"))
    for name, value in env.items():
        key = f"job.environment.{name}"
        if not isinstance(name, str) or not ENV_KEY.fullmatch(name) or len(name) > MAX_ENV_TEXT:
            problems.append(Problem(source, key, "invalid environment variable name",
                                    f"[a-zA-Z_][a-zA-Z0-9_]*, at most {MAX_ENV_TEXT} characters"))
        if isinstance(value, str) and len(value) > MAX_ENV_TEXT:
            problems.append(Problem(source, key, f"value is {len(value)} characters long",
                                    f"at most {MAX_ENV_TEXT} characters"))
    return problems


def _metrics(job: Mapping[str, Any], source: str) -> tuple[set[str], list[Problem]]:
    ours = metric_definitions()
    names = {m["Name"] for m in ours}
    extras = job.get("metric_definitions") or []
    problems: list[Problem] = []
    if not isinstance(extras, list):
        return names, problems
    total = len(ours) + len(extras)
    if total > MAX_METRICS:
        problems.append(Problem(source, "job.metric_definitions", f"{total} metric definitions "
                                f"in total ({len(ours)} built in + {len(extras)} extra)",
                                f"at most {MAX_METRICS} in total, so at most "
                                f"{MAX_METRICS - len(ours)} extra"))
    for i, item in enumerate(extras):
        key = f"job.metric_definitions[{i}]"
        item = _mapping(item)
        name = item.get("Name", item.get("name"))
        regex = item.get("Regex", item.get("regex"))
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_METRIC_NAME:
            problems.append(Problem(source, f"{key}.Name", "invalid metric name",
                                    f"1 to {MAX_METRIC_NAME} characters"))
        elif name in names:
            problems.append(Problem(source, f"{key}.Name", f"metric {name!r} is defined twice",
                                    "a name not among: " + ", ".join(sorted(names))))
        else:
            names.add(name)
        problems += _metric_regex(regex, source, f"{key}.Regex")
    return names, problems


def _metric_regex(regex: Any, source: str, key: str) -> list[Problem]:
    allowed = f"a regex of 1 to {MAX_METRIC_REGEX} characters with exactly one capture group"
    if not isinstance(regex, str) or not 1 <= len(regex) <= MAX_METRIC_REGEX:
        return [Problem(source, key, "invalid metric regex", allowed)]
    try:
        groups = re.compile(regex).groups
    except re.error as err:
        return [Problem(source, key, f"regex does not compile: {err}", allowed)]
    if groups != 1:
        return [Problem(source, key, f"regex has {groups} capture groups", allowed)]
    return []


def _hyperparameters(config: TrainerConfig, tuned: set[str], source: str) -> list[Problem]:
    static = {k: v for k, v in config.to_hyperparameters().items() if k not in tuned}
    problems = []
    if len(static) > MAX_HYPERPARAMETERS:
        problems.append(Problem(source, "trainer", f"{len(static)} hyperparameters",
                                f"at most {MAX_HYPERPARAMETERS}"))
    for name, value in static.items():
        if len(name) > MAX_HP_KEY:
            problems.append(Problem(source, f"trainer.{name}", "name is too long",
                                    f"at most {MAX_HP_KEY} characters"))
        if len(value) > MAX_HP_VALUE:
            problems.append(Problem(source, f"trainer.{name}", f"value is {len(value)} "
                                    "characters long", f"at most {MAX_HP_VALUE} characters"))
    return problems


# -- tuning -------------------------------------------------------------------------------------

def _range_names(tuning: Mapping[str, Any] | None) -> set[str]:
    ranges = _mapping((tuning or {}).get("hyperparameter_ranges"))
    return {str(name) for name in ranges}


def _tuning(tuning: Mapping[str, Any], metric_names: set[str], config: TrainerConfig | None,
            source: str) -> list[Problem]:
    problems = []
    objective = tuning.get("objective_metric_name")
    if objective is not None and objective not in metric_names:
        problems.append(Problem(source, "tuning.objective_metric_name", f"{objective!r} is not "
                                "a defined metric" + did_you_mean(str(objective), metric_names),
                                ", ".join(sorted(metric_names))))
    if tuning.get("strategy") == "Hyperband" and tuning.get("early_stopping_type") == "Auto":
        problems.append(Problem(source, "tuning.early_stopping_type", "Hyperband stops trials "
                                "itself", "Off with strategy Hyperband"))
    max_jobs, parallel = _int(tuning.get("max_jobs")), _int(tuning.get("max_parallel_jobs"))
    if parallel is not None and parallel < 1:
        problems.append(Problem(source, "tuning.max_parallel_jobs", f"{parallel} is too small",
                                "at least 1"))
    if max_jobs is not None and max_jobs < 1:
        problems.append(Problem(source, "tuning.max_jobs", f"{max_jobs} is too small",
                                "at least 1"))
    elif max_jobs is not None and parallel is not None and parallel > max_jobs:
        problems.append(Problem(source, "tuning.max_parallel_jobs", f"{parallel} exceeds "
                                f"max_jobs {max_jobs}", f"1 to {max_jobs}"))
    problems += _ranges(tuning, config, source)
    return problems


def _ranges(tuning: Mapping[str, Any], config: TrainerConfig | None,
            source: str) -> list[Problem]:
    ranges = tuning.get("hyperparameter_ranges")
    base = "tuning.hyperparameter_ranges"
    if not isinstance(ranges, Mapping) or not ranges:
        return [Problem(source, base, "a tuning job needs at least one range",
                        "name: {type: continuous|integer|categorical, ...}")]
    problems = []
    if len(ranges) > MAX_RANGES:
        problems.append(Problem(source, base, f"{len(ranges)} ranges",
                                f"at most {MAX_RANGES} in total"))
    specs = field_specs()
    for name, spec in ranges.items():
        key = f"{base}.{name}"
        if name not in specs:
            problems.append(Problem(source, key, "not a trainer hyperparameter"
                                    + did_you_mean(str(name), specs),
                                    "a trainer hyperparameter (docs/hyperparameters.md)"))
            continue
        if not isinstance(spec, Mapping):
            problems.append(Problem(source, key, "must be a mapping", "{type: ..., ...}"))
            continue
        problems += _one_range(str(name), spec, config, source, key)
        if tuning.get("strategy") == "Grid" and spec.get("type") != "categorical":
            problems.append(Problem(source, f"{key}.type", "Grid search takes categorical "
                                    "ranges only", "categorical"))
    return problems


def _one_range(name: str, spec: Mapping[str, Any], config: TrainerConfig | None, source: str,
               key: str) -> list[Problem]:
    kind = spec.get("type")
    field_kind = field_type(field_specs()[name]).__name__
    fits = {"continuous": ("float",), "integer": ("int",),
            "categorical": ("float", "int", "str", "bool")}
    if kind not in RANGE_TYPES:
        return [Problem(source, f"{key}.type", f"invalid range type {kind!r}",
                        ", ".join(RANGE_TYPES))]
    if field_kind not in fits[kind]:
        suits = [k for k in RANGE_TYPES if field_kind in fits[k]]
        article = "an" if kind == "integer" else "a"
        return [Problem(source, f"{key}.type", f"{article} {kind} range cannot set {name}, "
                        f"{'an' if field_kind == 'int' else 'a'} {field_kind} hyperparameter",
                        " or ".join(suits))]
    if kind == "categorical":
        return _categorical(name, spec, config, source, key)
    problems = []
    if spec.get("values") is not None:
        problems.append(Problem(source, f"{key}.values", "only for categorical ranges",
                                "min_value and max_value"))
    bounds = {}
    for end in ("min_value", "max_value"):
        if spec.get(end) is None:
            problems.append(Problem(source, f"{key}.{end}", "required value is missing",
                                    f"a {field_kind} value of {name}"))
            continue
        value, problem = _typed(name, spec[end], config, source, f"{key}.{end}")
        if problem:
            problems.append(problem)
        else:
            bounds[end] = value
    scaling = spec.get("scaling_type")
    if len(bounds) < 2:
        return problems
    low, high = bounds["min_value"], bounds["max_value"]
    if not low < high:
        problems.append(Problem(source, f"{key}.min_value", f"{low!r} is not below max_value "
                                f"{high!r}", "min_value < max_value"))
    elif scaling == "Logarithmic" and low <= 0:
        problems.append(Problem(source, f"{key}.min_value", f"{low!r} cannot be scaled "
                                "logarithmically", "min_value > 0 with Logarithmic scaling"))
    elif scaling == "ReverseLogarithmic" and (kind != "continuous" or low < 0 or high >= 1):
        problems.append(Problem(source, f"{key}.scaling_type", "ReverseLogarithmic needs a "
                                "continuous range within [0, 1)", "0 <= min_value < max_value "
                                "< 1 on a continuous range"))
    return problems


def _categorical(name: str, spec: Mapping[str, Any], config: TrainerConfig | None, source: str,
                 key: str) -> list[Problem]:
    problems = []
    for extra in ("min_value", "max_value"):
        if spec.get(extra) is not None:
            problems.append(Problem(source, f"{key}.{extra}", "not used by categorical ranges",
                                    "values"))
    if spec.get("scaling_type") not in (None, "Auto"):
        problems.append(Problem(source, f"{key}.scaling_type", "categorical ranges are not "
                                "scaled", "Auto, or leave it out"))
    values = spec.get("values")
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_CATEGORICAL_VALUES:
        problems.append(Problem(source, f"{key}.values", "needs a list of values",
                                f"1 to {MAX_CATEGORICAL_VALUES} values"))
        return problems
    seen = set()
    for i, value in enumerate(values):
        typed, problem = _typed(name, value, config, source, f"{key}.values[{i}]")
        if problem:
            problems.append(problem)
        elif typed in seen:
            problems.append(Problem(source, f"{key}.values[{i}]", f"{typed!r} is listed twice",
                                    "distinct values"))
        else:
            seen.add(typed)
    return problems


def _typed(name: str, value: Any, config: TrainerConfig | None, source: str,
           key: str) -> tuple[Any, Problem | None]:
    """A range end or categorical value as its field type, checked as a whole trial config."""
    text = format_value(value) if isinstance(value, (bool, int, float)) else value
    if not isinstance(text, str):
        return None, Problem(source, key, f"must be a scalar, got {type(value).__name__}",
                             "a value of the hyperparameter")
    try:
        typed = parse_value(name, text)
        if isinstance(typed, float) and not math.isfinite(typed):
            raise UserError(Problem("", name, f"invalid value {text!r}", "a finite number"))
        if config is not None:
            config.replace(**{name: typed})  # a trial must pass every rule of TrainerConfig
    except UserError as err:
        first = err.problems[0]
        return None, Problem(source, key, first.message, first.allowed)
    return typed, None
