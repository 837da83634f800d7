"""Validation for ``backend: kubeflow``: the recipe's Kubeflow rules, and each rendered object
against what the cluster will check.

- :func:`check_kubeflow_recipe`: rules between values (names, GPU split, labels, environment,
  the mapping of ``tuning:`` onto Katib, with the reason a setting cannot be mapped).
- :func:`check_kubeflow_resources`: TrainJob and TrainingRuntime against the Trainer v2.3.0 CRDs
  (unknown fields rejected), the CEL rules of those CRDs that need no old object (every one is
  known to :data:`CEL_RULES`; transition rules such as ``self == oldSelf`` are the immutable
  fields, covered by the content-hashed names), the JobSet name bound and ReplicatedJob names
  of at most 20 characters (Trainer 2.4); the Experiment against Katib's OpenAPI document
  (unknown fields rejected) and the rules of Katib's admission webhook; the trial TrainJob
  against the TrainJob CRD.

CRDs are read from ``<crd_dir>/kubeflow/`` (``../shared/crds/kubeflow`` in this repository).
"""

from __future__ import annotations

import copy
import functools
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import jsonschema

from mtgrpo.errors import Problem

if sys.version_info >= (3, 11):  # the regex parser moved (the old names warn)
    from re import _constants as sre_constants, _parser as sre_parse
else:  # pragma: no cover - Python 3.10
    import sre_constants
    import sre_parse
from mtgrpo.kubeflow import contract as kc
from mtgrpo.recipes import Recipe
from mtgrpo.validate.crd_schema import check_against_crd, error_problems, strictify

KUBEFLOW_CRD_DIR = "kubeflow"
KATIB_OPENAPI = "katib_v1beta1_swagger.json"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
REPLICATED_JOB_NAME_LIMIT = 20  # Trainer 2.4
EXPERIMENT_NAME_LIMIT = 40  # Katib's webhook
KATIB_ALGORITHMS = ("random", "tpe", "grid", "multivariate-tpe", "bayesianoptimization",
                    "cmaes", "sobol", "hyperband", "pbt", "enas", "darts")
KATIB_EARLY_STOPPING = ("medianstop",)
PARAMETER_TYPES = ("double", "int", "discrete", "categorical")
DISTRIBUTIONS = ("uniform", "logUniform", "normal", "logNormal")
_PLACEHOLDER = re.compile(r"\$\{trialParameters\.([^}]*)\}")
_META_REFERENCE = re.compile(r"^\$\{trialSpec\.(Name|Namespace|Kind|APIVersion|"
                             r"Labels\[[^\]]+\]|Annotations\[[^\]]+\])\}$")


# -- the recipe ---------------------------------------------------------------------------------

def check_kubeflow_recipe(recipe: Recipe) -> list[Problem]:
    """Every Kubeflow rule the recipe breaks (the shared SageMaker-style rules on S3 URIs,
    channels and tuning ranges are :func:`mtgrpo.validate.check_recipe`'s)."""
    from mtgrpo.kubeflow.render import placement

    kf = recipe.section or {}
    problems: list[Problem] = []

    def problem(key: str, message: str, allowed: str) -> None:
        problems.append(Problem(recipe.where(key), key, message, allowed))

    if not recipe.name[:1].isalpha():
        problem("name", f"{recipe.name!r} starts with a digit; Kubeflow object names must "
                "start with a letter", "a name starting with a letter")
    for key, low in (("num_nodes", 1), ("gpus_per_node", 0), ("max_restarts", 0),
                     ("vllm_gpus", 0)):
        value = kf.get(key)
        if isinstance(value, int) and value < low:
            problem(f"kubeflow.{key}", f"{value} is too small", f"at least {low}")
    if any(p.key.startswith("kubeflow.") for p in problems):
        return problems
    problems += placement(recipe)[1]
    namespace = kf.get("namespace")
    if namespace is not None and (not DNS_1123_LABEL.match(namespace) or len(namespace) > 63):
        problem("kubeflow.namespace", f"invalid namespace {namespace!r}",
                "a DNS label: lower-case letters, digits and '-', at most 63")
    for key in ("service_account", "priority_class"):
        value = kf.get(key)
        if value is not None and (not DNS_1123_SUBDOMAIN.match(value) or len(value) > 253):
            problem(f"kubeflow.{key}", f"invalid name {value!r}",
                    "lower-case letters, digits, '-' and '.', at most 253")
    if kf.get("queue") is not None and not _label_value_ok(kf["queue"]):
        problem("kubeflow.queue", f"invalid queue name {kf['queue']!r}",
                "a label value: at most 63 letters, digits, '-', '_' or '.'")
    for key, value in (kf.get("node_selector") or {}).items():
        problems += _label("kubeflow.node_selector", key, value, recipe)
    from mtgrpo.kubeflow.render import MANAGED_BY_LABEL, QUEUE_LABEL, RECIPE_LABEL
    for tag in recipe.job.get("tags", []):
        key = f"job.tags.{tag['Key']}"
        problems += _label("job.tags", tag["Key"], tag["Value"], recipe)
        if tag["Key"] in (MANAGED_BY_LABEL, RECIPE_LABEL, QUEUE_LABEL):
            problem(key, "is a label the renderer sets itself", "another label key")
    for name in recipe.job.get("environment", {}):
        key = f"job.environment.{name}"
        if name in kc.PET_VARIABLES:
            problem(key, "the torch runtime sets PET_* itself (Trainer's webhook refuses it)",
                    "another name; set kubeflow.num_nodes and gpus_per_node instead")
        elif name == kc.JOB_NAME_ENV or name.startswith(kc.TUNED_ENV_PREFIX):
            problem(key, "is set by the renderer", f"a name other than {kc.JOB_NAME_ENV} "
                    f"and {kc.TUNED_ENV_PREFIX}*")
        elif name in ("AWS_REGION", "AWS_DEFAULT_REGION") and recipe.job.get("region"):
            problem(key, "is set from job.region", "job.region, or leave job.region unset")
    if recipe.tuning is not None:
        problems += _tuning(recipe)
    problems += _batch_shape(recipe)
    return problems


def _batch_shape(recipe: Recipe) -> list[Problem]:
    """The world size is known at render time here: refuse a batch it cannot split."""
    from mtgrpo.errors import UserError
    from mtgrpo.kubeflow.render import placement
    from mtgrpo.trainer.train import check_batch_shape

    place, problems = placement(recipe)
    if place is None:
        return []
    try:
        check_batch_shape(recipe.trainer, place.world_size,
                          source=recipe.where("trainer.num_generations"))
    except UserError as err:
        return err.problems
    return []


def _label_value_ok(value: str) -> bool:
    return len(value) <= 63 and bool(LABEL_NAME.match(value))


def _label(base: str, key: str, value: str, recipe: Recipe) -> list[Problem]:
    where = f"{base}.{key}"
    prefix, _, name = key.rpartition("/")
    problems = []
    if (not name or len(name) > 63 or not LABEL_NAME.match(name)
            or (prefix and (len(prefix) > 253 or not DNS_1123_SUBDOMAIN.match(prefix)))):
        problems.append(Problem(recipe.where(where), where, "invalid label key",
                                "[prefix/]name: name at most 63 letters, digits, '-', '_', '.'; "
                                "prefix a DNS subdomain"))
    if not _label_value_ok(value):
        problems.append(Problem(recipe.where(where), where, f"invalid label value {value!r}",
                                "at most 63 letters, digits, '-', '_' or '.', starting and "
                                "ending with a letter or digit"))
    return problems


def _tuning(recipe: Recipe) -> list[Problem]:
    """The ``tuning:`` settings Katib cannot express, each with the reason."""
    from mtgrpo.kubeflow.render import distribution

    tuning = recipe.tuning or {}
    problems = []

    def problem(key: str, message: str, allowed: str) -> None:
        problems.append(Problem(recipe.where(key), key, message, allowed))

    strategy = tuning["strategy"]
    if strategy == "Hyperband":
        problem("tuning.strategy", "Hyperband cannot be mapped: Katib's hyperband needs a "
                "resource parameter and its eta/r_l settings, which tuning: has no way to say",
                "Bayesian, Random or Grid")
    for name, spec in sorted(tuning["hyperparameter_ranges"].items()):
        key = f"tuning.hyperparameter_ranges.{name}"
        if spec["type"] == "categorical":
            continue
        scaling = spec["scaling_type"]
        if scaling == "ReverseLogarithmic":
            problem(f"{key}.scaling_type", "ReverseLogarithmic has no Katib equivalent "
                    "(distributions: uniform, logUniform, normal, logNormal)",
                    "Linear, Logarithmic or Auto")
        elif spec["type"] == "continuous" and distribution(strategy, scaling) is None:
            problem(f"{key}.scaling_type", f"{scaling} cannot be honoured with strategy "
                    "Bayesian: Katib's bayesianoptimization (skopt) samples every continuous "
                    "range log-uniformly", "Logarithmic or Auto, or strategy Random")
        elif (spec["type"] == "continuous" and strategy == "Bayesian"
              and isinstance(spec["min_value"], (int, float)) and spec["min_value"] <= 0):
            problem(f"{key}.min_value", f"{spec['min_value']!r}: Katib's bayesianoptimization "
                    "samples continuous ranges log-uniformly, which needs min_value > 0",
                    "min_value > 0, or strategy Random")
    return problems


# -- rendered objects ---------------------------------------------------------------------------

def check_kubeflow_resources(resources: list, recipe: Recipe, *, crd_dir: Path) -> list[Problem]:
    """Problems of one recipe's rendered Kubeflow objects (``Resource``s), each naming the kind
    and the field path."""
    directory = Path(crd_dir) / KUBEFLOW_CRD_DIR
    if not (directory / "trainer.kubeflow.org_trainjobs.yaml").is_file():
        return [Problem(recipe.source, "backend", f"Kubeflow CRDs not found in {directory}",
                        "a kubeflow/ folder with the Trainer v2.3.0 CRDs and "
                        f"{KATIB_OPENAPI} beside the ACK CRDs (../shared/crds/kubeflow)")]
    problems: list[Problem] = []
    runtimes = {(r.body["metadata"].get("namespace"), r.body["metadata"].get("name"))
                for r in resources if r.kind == "TrainingRuntime"}
    for resource in resources:
        body = resource.body
        if resource.kind in ("TrainJob", "TrainingRuntime"):
            found = check_trainer_object(body, source=recipe.source, crd_dir=directory)
            if resource.kind == "TrainJob":
                found += _runtime_ref(body, runtimes, recipe.source)
        elif resource.kind == "Experiment":
            found = check_experiment(body, source=recipe.source, crd_dir=directory)
            trial = (((body.get("spec") or {}).get("trialTemplate") or {}).get("trialSpec")
                     or {})
            found += _runtime_ref({**trial, "metadata": body["metadata"]}, runtimes,
                                  recipe.source, "spec.trialTemplate.trialSpec.")
        elif resource.kind == "ConfigMap":
            found = _config_map(body, recipe.source)
        else:
            found = [Problem(recipe.source, "kind", f"unexpected kind {resource.kind}",
                             "ConfigMap, TrainingRuntime, TrainJob, Experiment")]
        problems += [Problem(p.file, p.key, f"{resource.kind}: {p.message}", p.allowed)
                     for p in found]
    return problems


def _runtime_ref(body: Mapping, runtimes: set, source: str, prefix: str = "") -> list[Problem]:
    ref = ((body.get("spec") or {}).get("runtimeRef") or {})
    namespace = (body.get("metadata") or {}).get("namespace")
    if ref.get("kind") != "TrainingRuntime" or (namespace, ref.get("name")) not in runtimes:
        return [Problem(source, f"{prefix}spec.runtimeRef", "does not name the TrainingRuntime "
                        "rendered with it in its namespace", "the recipe's own runtime")]
    return []


def _config_map(body: Mapping, source: str) -> list[Problem]:
    data = body.get("data")
    problems = _name(body, source, 253, DNS_1123_SUBDOMAIN)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return problems + [Problem(source, "data", "must map keys to strings", "strings")]
    size = sum(len(k) + len(v.encode()) for k, v in data.items())
    if size > 1024 * 1024:
        problems.append(Problem(source, "data", f"{size} bytes", "at most 1 MiB"))
    for key in (kc.HYPERPARAMETERS_KEY, kc.PLATFORM_KEY):
        if key not in data:
            problems.append(Problem(source, f"data.{key}", "required key is missing",
                                    "the keys mtgrpo.kubeflow.contract names"))
    return problems


def _name(body: Mapping, source: str, limit: int, pattern: re.Pattern) -> list[Problem]:
    name = (body.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not pattern.match(name) or len(name) > limit:
        return [Problem(source, "metadata.name", f"invalid name {name!r}",
                        f"at most {limit} characters matching {pattern.pattern}")]
    return []


def check_trainer_object(body: dict, *, source: str, crd_dir: Path) -> list[Problem]:
    """A TrainJob or TrainingRuntime: CRD schema (strict), evaluable CEL rules, JobSet bounds."""
    problems = check_against_crd(body, source=source, crd_dir=crd_dir)
    problems += check_cel(body, source=source, crd_dir=crd_dir)
    kind = body.get("kind")
    spec: dict = body["spec"] if isinstance(body.get("spec"), dict) else {}
    if kind == "TrainJob":
        from mtgrpo.kubeflow.render import train_job_name_limit
        nodes = (spec.get("trainer") or {}).get("numNodes") or 1
        limit = train_job_name_limit(nodes if isinstance(nodes, int) else 1)
        name = (body.get("metadata") or {}).get("name") or ""
        if isinstance(name, str) and len(name) > limit:
            problems.append(Problem(source, "metadata.name", f"{len(name)} characters: the "
                                    "JobSet's pod names would exceed 63",
                                    f"at most {limit} characters"))
        for i, env in enumerate((spec.get("trainer") or {}).get("env") or []):
            if isinstance(env, dict) and env.get("name") in kc.PET_VARIABLES:
                problems.append(Problem(source, f"spec.trainer.env[{i}].name", "PET_* are "
                                        "reserved for the torch runtime", "another name"))
    elif kind == "TrainingRuntime":
        problems += _replicated_jobs(spec, source)
    return problems


def _replicated_jobs(spec: Mapping, source: str) -> list[Problem]:
    template = ((spec.get("template") or {}).get("spec") or {})
    problems = []
    if "ttlSecondsAfterFinished" in template:
        problems.append(Problem(source, "spec.template.spec.ttlSecondsAfterFinished",
                                "the TrainJob controller re-creates finished JobSets in loops "
                                "(kubeflow/trainer#2981)", "leave it out"))
    trainers = 0
    for i, job in enumerate(template.get("replicatedJobs") or []):
        if not isinstance(job, dict):
            continue
        key = f"spec.template.spec.replicatedJobs[{i}]"
        name = job.get("name")
        if not isinstance(name, str) or not DNS_1035.match(name) \
                or len(name) > REPLICATED_JOB_NAME_LIMIT:
            problems.append(Problem(source, f"{key}.name", f"invalid ReplicatedJob name "
                                    f"{name!r}", f"a DNS-1035 label of at most "
                                    f"{REPLICATED_JOB_NAME_LIMIT} characters (Trainer 2.4)"))
        labels = (((job.get("template") or {}).get("metadata") or {}).get("labels") or {})
        if labels.get("trainer.kubeflow.org/trainjob-ancestor-step") == "trainer":
            trainers += 1
            pod = (((job.get("template") or {}).get("spec") or {}).get("template") or {})
            names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []
                     if isinstance(c, dict)]
            if kc.CONTAINER not in names:
                problems.append(Problem(source, f"{key}.template.spec.template.spec.containers",
                                        f"no container named {kc.CONTAINER!r}: the TrainJob's "
                                        "trainer settings would reach nothing",
                                        f"a container named {kc.CONTAINER}"))
    if trainers != 1:
        problems.append(Problem(source, "spec.template.spec.replicatedJobs", f"{trainers} "
                                "replicated jobs labelled trainjob-ancestor-step: trainer",
                                "exactly one"))
    return problems


# -- CEL rules ----------------------------------------------------------------------------------

def _has(obj: Any, key: str) -> bool:
    return isinstance(obj, dict) and key in obj


# Every CEL rule of the Trainer v2.3.0 CRDs that does not read the old object, as Python.
# tests/test_kubeflow_validate.py checks that this table covers every such rule in the CRDs.
CEL_RULES: dict[str, Callable[[Any], bool]] = {
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')":
        lambda s: bool(DNS_1035.match(str((s.get("metadata") or {}).get("name", "")))),
    "size(self.metadata.name) <= 63":
        lambda s: len(str((s.get("metadata") or {}).get("name", ""))) <= 63,
    "self == '' || self.matches('^[A-Za-z][A-Za-z0-9+.-]*://.+$')":
        lambda s: s == "" or bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://.+$", s)),
    "self in ['trainer.kubeflow.org/trainjob-controller', 'kueue.x-k8s.io/multikueue']":
        lambda s: s in ("trainer.kubeflow.org/trainjob-controller", "kueue.x-k8s.io/multikueue"),
    "has(self.lastUpdatedTime)": lambda s: _has(s, "lastUpdatedTime"),
    "[has(self.torch), has(self.mpi), has(self.jax), has(self.xgboost),has(self.flux)]"
    ".filter(x, x).size() <= 1":
        lambda s: sum(_has(s, k) for k in ("torch", "mpi", "jax", "xgboost", "flux")) <= 1,
    "self >= 1": lambda s: s >= 1,
    "!self.exists(c, c == 'node')": lambda s: "node" not in s,
    "!(has(self.startupPolicy) && self.startupPolicy.startupPolicyOrder == 'InOrder' && "
    "self.replicatedJobs.exists(x, has(x.dependsOn)))":
        lambda s: not (_has(s, "startupPolicy")
                       and s["startupPolicy"].get("startupPolicyOrder") == "InOrder"
                       and any(_has(x, "dependsOn") for x in s.get("replicatedJobs") or [])),
    "self.templates.all(t, !has(t.metadata.namespace) || size(t.metadata.namespace) == 0)":
        lambda s: all(not (t.get("metadata") or {}).get("namespace")
                      for t in s.get("templates") or []),
}


def is_transition_rule(rule: str) -> bool:
    """Rules comparing with the stored object (immutability): never apply on create."""
    return "oldSelf" in rule


@functools.lru_cache(maxsize=None)
def _crd_schemas(crd_dir: str) -> dict[str, dict]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out = {}
    for path in sorted(Path(crd_dir).glob("trainer.kubeflow.org_*.yaml")):
        doc = yaml.load(path.read_text(), Loader=loader)
        out[doc["spec"]["names"]["kind"]] = doc["spec"]["versions"][0]["schema"][
            "openAPIV3Schema"]
    return out


def cel_rules(crd_dir: Path) -> Iterator[tuple[str, str, str]]:
    """(kind, schema path, rule) of every CEL rule in the Trainer CRDs."""
    def walk(node: Any, path: str) -> Iterator[tuple[str, str]]:
        if not isinstance(node, dict):
            return
        for rule in node.get("x-kubernetes-validations") or []:
            yield path, rule["rule"]
        for key, sub in (node.get("properties") or {}).items():
            yield from walk(sub, f"{path}.{key}" if path else key)
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], path + "[]")
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], path + "{}")

    for kind, schema in _crd_schemas(str(Path(crd_dir).resolve())).items():
        for path, rule in walk(schema, ""):
            yield kind, path, rule


def check_cel(body: dict, *, source: str, crd_dir: Path) -> list[Problem]:
    """The object against every CEL rule on its path that needs no old object."""
    schema = _crd_schemas(str(Path(crd_dir).resolve())).get(str(body.get("kind")))
    if schema is None:
        return []
    problems: list[Problem] = []

    def walk(node: Any, value: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        for rule in node.get("x-kubernetes-validations") or []:
            text = rule["rule"]
            if is_transition_rule(text):
                continue
            check = CEL_RULES.get(text)
            if check is None:
                problems.append(Problem(source, path or "metadata", f"CEL rule not "
                                        f"evaluated offline: {text}", "a rule in CEL_RULES"))
                continue
            try:
                ok = check(value)
            except (TypeError, AttributeError, KeyError):
                ok = True  # a wrong type: the schema check reports it
            if not ok:
                problems.append(Problem(source, path or "metadata.name", rule.get(
                    "message", f"fails {text}"), text))
        if isinstance(value, dict):
            for key, sub in (node.get("properties") or {}).items():
                if key in value:
                    walk(sub, value[key], f"{path}.{key}" if path else key)
            extra = node.get("additionalProperties")
            if isinstance(extra, dict):
                for key, item in value.items():
                    walk(extra, item, f"{path}.{key}" if path else key)
        elif isinstance(value, list) and isinstance(node.get("items"), dict):
            for i, item in enumerate(value):
                walk(node["items"], item, f"{path}[{i}]")

    walk(schema, body, "")
    return problems


# -- Katib Experiment ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _katib_validator(path: str) -> jsonschema.Draft7Validator:
    document = json.loads(Path(path).read_text())
    schemas = copy.deepcopy(document["components"]["schemas"])
    for name, schema in schemas.items():
        if name != "io.k8s.apimachinery.pkg.apis.meta.v1.unstructured.Unstructured":
            strictify(schema)
    root = {"$ref": "#/components/schemas/v1beta1.Experiment", "components": {"schemas": schemas}}
    return jsonschema.Draft7Validator(root)


def metrics_format_groups(regex: str) -> int | None:
    """Top-level capture groups of a regex (Katib wants exactly two), None if it is invalid."""
    try:
        parsed = sre_parse.parse(regex)
    except (re.error, sre_constants.error):
        return None
    items: list[Any] = list(parsed.data)  # (opcode, argument) pairs
    return sum(1 for op, arg in items if op is sre_constants.SUBPATTERN and arg[0] is not None)


def check_experiment(body: dict, *, source: str, crd_dir: Path) -> list[Problem]:
    """An Experiment: Katib's OpenAPI (strict), its webhook's rules, the trial TrainJob."""
    validator = _katib_validator(str(Path(crd_dir) / KATIB_OPENAPI))
    problems = [p for err in validator.iter_errors(body)
                for e in (err.context or [err]) for p in error_problems(e, source)]
    problems += _name(body, source, EXPERIMENT_NAME_LIMIT, DNS_1035)
    spec: dict = body["spec"] if isinstance(body.get("spec"), dict) else {}
    problems += _counts(spec, source)
    problems += _objective(spec, source)
    algorithm = (spec.get("algorithm") or {}).get("algorithmName")
    if algorithm not in KATIB_ALGORITHMS:
        problems.append(Problem(source, "spec.algorithm.algorithmName",
                                f"unknown algorithm {algorithm!r}", ", ".join(KATIB_ALGORITHMS)))
    early = (spec.get("earlyStopping") or {}).get("algorithmName")
    if "earlyStopping" in spec and early not in KATIB_EARLY_STOPPING:
        problems.append(Problem(source, "spec.earlyStopping.algorithmName",
                                f"unknown early stopping {early!r}", "medianstop"))
    names, found = _parameters(spec, source, algorithm)
    problems += found
    problems += _trial_template(body, spec, names, source, crd_dir)
    for i, regex in enumerate(((spec.get("metricsCollectorSpec") or {}).get("source") or {})
                              .get("filter", {}).get("metricsFormat") or []):
        if metrics_format_groups(regex) != 2:
            problems.append(Problem(source, f"spec.metricsCollectorSpec.source.filter."
                                    f"metricsFormat[{i}]", "needs exactly two top-level "
                                    "capture groups (name, value)", "a regex like "
                                    r"([\w|-]+)\s*=\s*(\d+)"))
    return sorted(set(problems), key=lambda p: (p.key, p.message))


def _counts(spec: Mapping, source: str) -> list[Problem]:
    problems = []
    parallel, total = spec.get("parallelTrialCount"), spec.get("maxTrialCount")
    failed = spec.get("maxFailedTrialCount")
    for key, value, low in (("parallelTrialCount", parallel, 1), ("maxTrialCount", total, 1),
                            ("maxFailedTrialCount", failed, 0)):
        if isinstance(value, int) and value < low:
            problems.append(Problem(source, f"spec.{key}", f"{value} is too small",
                                    f"at least {low}"))
    if isinstance(total, int) and isinstance(failed, int) and failed > total:
        problems.append(Problem(source, "spec.maxFailedTrialCount", f"{failed} exceeds "
                                f"maxTrialCount {total}", f"at most {total}"))
    if isinstance(total, int) and isinstance(parallel, int) and parallel > total:
        problems.append(Problem(source, "spec.parallelTrialCount", f"{parallel} exceeds "
                                f"maxTrialCount {total}", f"at most {total}"))
    return problems


def _objective(spec: Mapping, source: str) -> list[Problem]:
    objective = spec.get("objective") or {}
    problems = []
    if objective.get("type") not in ("minimize", "maximize"):
        problems.append(Problem(source, "spec.objective.type", f"invalid value "
                                f"{objective.get('type')!r}", "minimize or maximize"))
    name = objective.get("objectiveMetricName")
    if not isinstance(name, str) or not name or re.search(r"[/.]", name):
        problems.append(Problem(source, "spec.objective.objectiveMetricName", f"invalid metric "
                                f"name {name!r}", "a name without '/' or '.'"))
    extra = objective.get("additionalMetricNames") or []
    if name in extra:
        problems.append(Problem(source, "spec.objective.additionalMetricNames",
                                "repeats the objective", "other metric names"))
    for i, strategy in enumerate(objective.get("metricStrategies") or []):
        if strategy.get("name") not in [name, *extra]:
            problems.append(Problem(source, f"spec.objective.metricStrategies[{i}].name",
                                    f"{strategy.get('name')!r} is not a collected metric",
                                    ", ".join(str(m) for m in [name, *extra])))
        if strategy.get("value") not in ("min", "max", "latest"):
            problems.append(Problem(source, f"spec.objective.metricStrategies[{i}].value",
                                    f"invalid value {strategy.get('value')!r}",
                                    "min, max or latest"))
    return problems


def _parameters(spec: Mapping, source: str, algorithm: Any) -> tuple[set, list[Problem]]:
    problems = []
    names: set = set()
    for i, param in enumerate(spec.get("parameters") or []):
        key = f"spec.parameters[{i}]"
        name, kind = param.get("name"), param.get("parameterType")
        space = param.get("feasibleSpace") or {}
        if name in names:
            problems.append(Problem(source, f"{key}.name", f"{name!r} twice", "distinct names"))
        names.add(name)
        if kind not in PARAMETER_TYPES:
            problems.append(Problem(source, f"{key}.parameterType", f"invalid type {kind!r}",
                                    ", ".join(PARAMETER_TYPES)))
        elif kind in ("double", "int"):
            if "list" in space or not ("min" in space and "max" in space):
                problems.append(Problem(source, f"{key}.feasibleSpace", f"{kind} needs min and "
                                        "max and no list", "min, max (step, distribution)"))
            else:
                low: float | None
                high: float | None
                try:
                    low, high = float(space["min"]), float(space["max"])
                except ValueError:
                    low = high = None
                    problems.append(Problem(source, f"{key}.feasibleSpace", "min/max are not "
                                            "numbers", "numbers as strings"))
                if low is not None and high is not None and low >= high:
                    problems.append(Problem(source, f"{key}.feasibleSpace.min", f"{low} is not "
                                            f"below max {high}", "min < max"))
                if low is not None and algorithm == "bayesianoptimization" and \
                        kind == "double" and low <= 0:
                    problems.append(Problem(source, f"{key}.feasibleSpace.min", "skopt samples "
                                            "doubles log-uniformly", "min > 0"))
        elif any(k in space for k in ("min", "max", "step")) or not space.get("list"):
            problems.append(Problem(source, f"{key}.feasibleSpace", f"{kind} takes a list only",
                                    "list"))
        if space.get("distribution") not in (None, *DISTRIBUTIONS):
            problems.append(Problem(source, f"{key}.feasibleSpace.distribution", "invalid "
                                    f"value {space['distribution']!r}", ", ".join(DISTRIBUTIONS)))
    return names, problems


def _trial_template(body: Mapping, spec: Mapping, parameters: set, source: str,
                    crd_dir: Path) -> list[Problem]:
    template = spec.get("trialTemplate") or {}
    base = "spec.trialTemplate"
    problems = []
    if not template.get("primaryContainerName"):
        problems.append(Problem(source, f"{base}.primaryContainerName", "required value is "
                                "missing", kc.CONTAINER))
    trial = template.get("trialSpec")
    if not isinstance(trial, dict) or not trial.get("apiVersion") or not trial.get("kind"):
        return problems + [Problem(source, f"{base}.trialSpec", "needs apiVersion and kind",
                                   "a TrainJob")]
    meta = trial.get("metadata") or {}
    if "name" in meta or "namespace" in meta:
        problems.append(Problem(source, f"{base}.trialSpec.metadata", "Katib names trials "
                                "itself", "no name or namespace"))
    text = json.dumps(trial, sort_keys=True)
    used = set(_PLACEHOLDER.findall(text))
    declared = set()
    for i, item in enumerate(template.get("trialParameters") or []):
        name, ref = item.get("name"), item.get("reference")
        declared.add(name)
        if ref not in parameters and not _META_REFERENCE.match(str(ref)):
            problems.append(Problem(source, f"{base}.trialParameters[{i}].reference",
                                    f"{ref!r} is no parameter", ", ".join(sorted(
                                        map(str, parameters)))))
        if name not in used:
            problems.append(Problem(source, f"{base}.trialParameters[{i}].name", f"{name!r} "
                                    "never appears in trialSpec", "${trialParameters.<name>}"))
    for name in sorted(used - declared):
        problems.append(Problem(source, f"{base}.trialSpec", f"${{trialParameters.{name}}} is "
                                "not declared in trialParameters", "declared names"))
    if trial.get("kind") == "TrainJob":
        name = f"{(body.get('metadata') or {}).get('name', '')}-abcdefgh"  # Katib's trial name
        named = {**trial, "metadata": {**meta, "name": name}}
        problems += [Problem(p.file, f"{base}.trialSpec.{p.key}", p.message, p.allowed)
                     for p in check_trainer_object(named, source=source, crd_dir=crd_dir)
                     if p.key != "spec.runtimeRef"]
    return problems
