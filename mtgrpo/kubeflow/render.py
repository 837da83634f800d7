"""Recipe -> Kubeflow resources (``backend: kubeflow``): a ConfigMap, a per-recipe
TrainingRuntime and a TrainJob, or for a tuning recipe a Katib Experiment whose trials are
TrainJobs (plus the TrainJob when ``tuning.render_training_job``).

The objects of one recipe share one content-hashed name: the hash covers all of them (names
left out), so any change that alters what runs gives three new objects, and every field the
Trainer CRDs call immutable is covered. Templates live in ``templates/kubeflow/``; this module
computes the values (placement of the vLLM and training GPUs, environment, Katib's mapping of
the ``tuning:`` section) and the names. docs/kubeflow.md describes the output.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from mtgrpo.contract import TrainerConfig
from mtgrpo.contract.config import format_value
from mtgrpo.contract.placement import Placement, place, starts_vllm
from mtgrpo.errors import Problem, UserError
from mtgrpo.kubeflow import contract as kc
from mtgrpo.recipes import Recipe
from mtgrpo.render import naming
from mtgrpo.render.objects import (MANAGED_BY_LABEL, RECIPE_LABEL, SOURCE_ANNOTATION,
                                   SYNC_OPTIONS, SYNC_OPTIONS_ANNOTATION, Resource, emit,
                                   render_object)
from mtgrpo.render.settings import Settings
from mtgrpo.render.templating import template_path

BACKEND = "kubeflow"
TRAINER_API = "trainer.kubeflow.org/v1alpha1"
KATIB_API = "kubeflow.org/v1beta1"
VERSION_ANNOTATION = "mtgrpo.io/kubeflow-trainer-version"
# SYNC_OPTIONS (Prune=false) also because TrainJob's runtimeRef, trainer and
# activeDeadlineSeconds are immutable: never Replace or Force.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GPU_RESOURCE = "nvidia.com/gpu"
# The pod's grace period after SIGTERM: the launcher's stop (100 s) plus the final uploads.
GRACE_SECONDS = 300

TEMPLATE_FILES = {"ConfigMap": "kubeflow/configmap.yaml.j2",
                  "TrainingRuntime": "kubeflow/trainingruntime.yaml.j2",
                  "TrainJob": "kubeflow/trainjob.yaml.j2",
                  "Experiment": "kubeflow/experiment.yaml.j2"}

# Name limits (docs/kubeflow.md "Names"). A JobSet pod is `<jobset>-node-<job>-<pod>-<5>`, a
# DNS-1035 label of at most 63: the TrainJob name may use 63 - 8 - digits(pod index) - 6.
# A Katib trial (and its TrainJob) is `<experiment>-<8 chars>`: experiments stay <= 39.
EXPERIMENT_NAME_LIMIT = 39
# A placeholder for the shared name while the objects are hashed; replaced afterwards.
_NAME = "mtgrpo-name-placeholder"

# SageMaker strategy -> Katib algorithm (KUBEFLOW.md §5.5); Hyperband is refused (validate).
ALGORITHMS = {"Bayesian": "bayesianoptimization", "Random": "random", "Grid": "grid"}
KATIB_TYPES = {"continuous": "double", "integer": "int", "categorical": "categorical"}
# Katib's StdOut collector: one regex, exactly two top-level groups (name, value), applied to
# every line holding a metric name. It reads each `name=value` of the trainer's metric lines.
METRICS_FORMAT = r"([a-z][a-z0-9_]*)=([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def train_job_name_limit(num_nodes: int) -> int:
    return 63 - len("-node-0-") - len(str(max(num_nodes - 1, 0))) - len("-abcde")


def section(recipe: Recipe) -> dict:
    """The recipe's checked ``kubeflow:`` section (defaults filled in)."""
    assert recipe.section is not None, recipe.source  # the loader fills it for this backend
    return recipe.section


def tuning_of(recipe: Recipe) -> dict:
    assert recipe.tuning is not None, recipe.source
    return recipe.tuning


def placement(recipe: Recipe) -> tuple[Placement | None, list[Problem]]:
    """The GPU split of a Kubeflow recipe by the one placement rule
    (:func:`mtgrpo.contract.placement.place`, which the launcher in each pod runs too), or the
    problems that make it impossible. ``kubeflow.vllm_gpus`` is a count: the server gets the
    last that many GPUs of the first pod unless ``trainer.vllm_gpus`` names them."""
    kf = recipe.section or {}
    trainer = recipe.trainer
    gpus = kf["gpus_per_node"]
    problems: list[Problem] = []

    def problem(key: str, message: str, allowed: str) -> None:
        problems.append(Problem(recipe.where(key), key, message, allowed))

    managed = starts_vllm(trainer)  # the pods' first host is not known here: URLs name this pod
    shared = trainer.generation_backend == "vllm_shared"
    wanted = kf["vllm_gpus"]
    text = trainer.vllm_gpus
    count = 0
    if not managed or gpus == 0:
        if wanted:
            why = ("0 GPUs per node" if gpus == 0 else
                   "no vLLM server is started by the job (generation_backend "
                   f"{trainer.generation_backend}, vllm_server_url {trainer.vllm_server_url})")
            problem("kubeflow.vllm_gpus", f"{wanted} GPUs for vLLM with {why}", "0 or unset")
    elif text.strip():
        count = len(text.split(","))
        if wanted is not None and wanted != count:
            problem("kubeflow.vllm_gpus", f"{wanted} differs from trainer.vllm_gpus "
                    f"{trainer.vllm_gpus!r} ({count} GPUs)", f"{count}, or unset")
    else:
        count = 1 if wanted is None else wanted
        if count < 1:
            problem("kubeflow.vllm_gpus", f"{count} GPUs for the vLLM server the job starts",
                    "at least 1 (or generation_backend transformers)")
        text = ",".join(str(g) for g in range(max(gpus - count, 0), gpus))  # the last GPUs
    if gpus > 0 and managed and not shared and gpus - count < 1:
        problem("kubeflow.gpus_per_node", f"{gpus} GPUs per node leave none for training "
                f"after {count} for vLLM", f"at least {count + 1}, or generation_backend "
                "transformers")
    if problems:
        return None, problems
    try:
        where = place(trainer.replace(vllm_gpus=text) if text != trainer.vllm_gpus else trainer,
                      num_nodes=kf["num_nodes"], gpus_per_node=gpus,
                      source=recipe.where("trainer.vllm_gpus"), key_prefix="trainer.")
    except UserError as err:
        return None, [Problem(recipe.where(p.key), p.key, p.message, p.allowed)
                      for p in err.problems]
    return where, []


def rendered_vllm_gpus(recipe: Recipe, where: Placement) -> str:
    """The trainer's ``vllm_gpus`` as rendered: the placement's GPUs made explicit."""
    if where.starts_vllm and where.gpus_per_node > 0 and not recipe.trainer.vllm_gpus.strip():
        return where.vllm_gpus_text
    return recipe.trainer.vllm_gpus


def build_kubeflow_resources(recipe: Recipe, settings: Settings) -> list[Resource]:
    """The resources of a ``backend: kubeflow`` recipe."""
    place, problems = placement(recipe)
    if place is None:
        raise UserError(problems)
    if recipe.tuning is None:
        return _training(recipe, settings, place)
    out = _tuning(recipe, settings, place)
    if recipe.tuning["render_training_job"]:
        out += _training(recipe, settings, place)
    return out


# -- shared values ------------------------------------------------------------------------------

def _namespace(recipe: Recipe, settings: Settings) -> str:
    return (recipe.section or {}).get("namespace") or settings.namespace


def _labels(recipe: Recipe) -> dict[str, str]:
    labels = {t["Key"]: t["Value"] for t in recipe.job["tags"]}
    labels.update({MANAGED_BY_LABEL: "mtgrpo", RECIPE_LABEL: recipe.name})
    return labels


def _annotations(recipe: Recipe) -> dict[str, str]:
    return {SOURCE_ANNOTATION: recipe.source, SYNC_OPTIONS_ANNOTATION: SYNC_OPTIONS,
            VERSION_ANNOTATION: section(recipe)["trainer_version"]}


def _config_data(recipe: Recipe, hyperparameters: Mapping[str, str]) -> dict[str, str]:
    job = recipe.job
    platform = {"channels": {name: job["inputs"][name]["s3_data"]
                             for name in sorted(job["inputs"])},
                "output_path": job["output_path"],
                "checkpoint_s3_uri": job["checkpoint_s3_uri"] or ""}
    # One line each: the canonical YAML writer would otherwise escape every newline.
    return {kc.HYPERPARAMETERS_KEY: json.dumps(dict(hyperparameters), sort_keys=True),
            kc.PLATFORM_KEY: json.dumps(platform, sort_keys=True)}


def _env(recipe: Recipe) -> list[dict]:
    job = recipe.job
    env = [{"name": key, "value": job["environment"][key]} for key in sorted(job["environment"])]
    if job.get("region"):
        env += [{"name": "AWS_REGION", "value": job["region"]},
                {"name": "AWS_DEFAULT_REGION", "value": job["region"]}]
    env.append({"name": kc.JOB_NAME_ENV, "valueFrom": {"fieldRef": {
        "fieldPath": f"metadata.labels['{kc.JOB_NAME_LABEL}']"}}})
    return env


def _resources(kf: Mapping[str, Any], place: Placement) -> dict:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if kf["cpu"]:
        requests["cpu"] = kf["cpu"]
    if kf["memory"]:
        requests["memory"] = limits["memory"] = kf["memory"]
    if place.gpus_per_node:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(place.gpus_per_node)
    out = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _context(recipe: Recipe, settings: Settings, place: Placement) -> dict:
    kf = dict(recipe.section or {})
    kf["procs_per_node"] = place.processes_per_node
    return {"name": _NAME, "namespace": _namespace(recipe, settings),
            "labels": _labels(recipe), "annotations": _annotations(recipe),
            "pod_labels": {RECIPE_LABEL: recipe.name},
            "image": recipe.job["image_uri"], "command": list(kc.COMMAND),
            "env": _env(recipe), "resources": _resources(kf, place), "kf": kf,
            "max_run": recipe.job["max_run"], "config_dir": kc.CONFIG_DIR,
            "shm_dir": kc.SHM_DIR, "termination_log": kc.TERMINATION_LOG,
            "grace_seconds": GRACE_SECONDS, "trainer_env": []}


def _render(kind: str, recipe: Recipe, settings: Settings, ctx: dict) -> dict:
    return render_object(TEMPLATE_FILES[kind], kind, settings, ctx, source=recipe.source,
                         allowed=f"kind {kind} with metadata.name {{{{ name | json }}}}")[0]


def hash_input(bodies: list[dict]) -> list[dict]:
    """What the shared name's hash covers: every object whole (the name is a placeholder),
    except the annotations (source file, sync options), which change nothing that runs."""
    out = []
    for body in bodies:
        meta = {k: v for k, v in body.get("metadata", {}).items() if k != "annotations"}
        out.append({**body, "metadata": meta})
    return out


def _named(recipe: Recipe, kinds_bodies: list[tuple[str, dict]], limit: int,
           settings: Settings) -> list[Resource]:
    # "backend" stays in the hash input as it always was: job names must not change.
    name = naming.job_name(recipe.name, {"backend": "kubeflow", "objects": hash_input(
        [b for _, b in kinds_bodies])}, limit)
    out = []
    for kind, body in kinds_bodies:
        template = TEMPLATE_FILES[kind]
        shown = template_path(template, settings.templates_dir, settings.templates)[1]
        out.append(emit(kind, name, _replace(body, _NAME, name), source=recipe.source,
                        recipe=recipe.name, template=template, shown=shown, backend=BACKEND))
    return out


def _replace(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        return {k: _replace(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace(v, old, new) for v in node]
    return new if node == old else node


def _trainer(recipe: Recipe, place: Placement) -> TrainerConfig:
    rendered = rendered_vllm_gpus(recipe, place)
    if rendered != recipe.trainer.vllm_gpus:
        return recipe.trainer.replace(vllm_gpus=rendered)
    return recipe.trainer


# -- training -----------------------------------------------------------------------------------

def _training(recipe: Recipe, settings: Settings, place: Placement):
    ctx = _context(recipe, settings, place)
    hyperparameters = _trainer(recipe, place).to_hyperparameters()
    ctx["config_data"] = _config_data(recipe, hyperparameters)
    job_ctx = dict(ctx)
    if section(recipe)["queue"]:
        job_ctx["labels"] = {**ctx["labels"], QUEUE_LABEL: section(recipe)["queue"]}
    bodies = [("ConfigMap", _render("ConfigMap", recipe, settings, ctx)),
              ("TrainingRuntime", _render("TrainingRuntime", recipe, settings, ctx)),
              ("TrainJob", _render("TrainJob", recipe, settings, job_ctx))]
    return _named(recipe, bodies, train_job_name_limit(section(recipe)["num_nodes"]), settings)


# -- tuning -------------------------------------------------------------------------------------

def _text(value: Any) -> str:
    return format_value(value) if isinstance(value, (bool, int, float)) else str(value)


def distribution(strategy: str, scaling: str) -> str | None:
    """Katib's distribution for a continuous or integer range; None when it cannot be honoured
    (mtgrpo.kubeflow.validate names the reason)."""
    if scaling == "ReverseLogarithmic":
        return None
    if strategy == "Bayesian":
        # skopt samples every double log-uniformly whatever the distribution says.
        return "logUniform" if scaling in ("Auto", "Logarithmic") else None
    return "logUniform" if scaling == "Logarithmic" else "uniform"


def katib_parameters(tuning: Mapping[str, Any]) -> list[dict]:
    out = []
    ranges = tuning["hyperparameter_ranges"]
    for name in sorted(ranges):
        spec = ranges[name]
        item: dict[str, Any] = {"name": name, "parameterType": KATIB_TYPES[spec["type"]]}
        if spec["type"] == "categorical":
            item["feasibleSpace"] = {"list": [_text(v) for v in spec["values"] or []]}
        else:
            space = {"min": _text(spec["min_value"]), "max": _text(spec["max_value"])}
            dist = distribution(tuning["strategy"], spec["scaling_type"])
            if dist is not None and not (spec["type"] == "integer" and
                                         tuning["strategy"] == "Bayesian"):
                space["distribution"] = dist
            item["feasibleSpace"] = space
        out.append(item)
    return out


def tuned_env_name(parameter: str) -> str:
    return kc.TUNED_ENV_PREFIX + parameter


def _tuning(recipe: Recipe, settings: Settings, place: Placement):
    tuning = tuning_of(recipe)
    ranges = tuning["hyperparameter_ranges"]
    ctx = _context(recipe, settings, place)
    hyperparameters = _trainer(recipe, place).to_hyperparameters()
    static = {k: v for k, v in hyperparameters.items() if k not in ranges}
    ctx["config_data"] = _config_data(recipe, static)
    trial_ctx = dict(ctx)
    trial_ctx["trainer_env"] = [{"name": tuned_env_name(n),
                                 "value": "${trialParameters.%s}" % n} for n in sorted(ranges)]
    trial = _render("TrainJob", recipe, settings, trial_ctx)
    labels = {RECIPE_LABEL: recipe.name}
    if section(recipe)["queue"]:
        labels[QUEUE_LABEL] = section(recipe)["queue"]
    trial["metadata"] = {"labels": labels}  # Katib names each trial's TrainJob itself
    metric = tuning["objective_metric_name"]
    exp_ctx = dict(ctx)
    exp_ctx.update({
        "objective": {"type": tuning["objective_type"].lower(), "objectiveMetricName": metric,
                      # SageMaker scores a trial by its last value; Katib defaults to max/min.
                      "metricStrategies": [{"name": metric, "value": "latest"}]},
        "algorithm": ALGORITHMS.get(tuning["strategy"], tuning["strategy"].lower()),
        "early_stopping": "medianstop" if tuning["early_stopping_type"] == "Auto" else "",
        "counts": {"parallel": tuning["max_parallel_jobs"], "max": tuning["max_jobs"],
                   "max_failed": tuning["max_jobs"]},
        "parameters": katib_parameters(tuning),
        "metrics_format": [METRICS_FORMAT],
        "trial_parameters": [{"name": n, "reference": n,
                              "description": f"trainer hyperparameter {n}"}
                             for n in sorted(ranges)],
        "trial_spec": trial,
    })
    bodies = [("ConfigMap", _render("ConfigMap", recipe, settings, ctx)),
              ("TrainingRuntime", _render("TrainingRuntime", recipe, settings, ctx)),
              ("Experiment", _render("Experiment", recipe, settings, exp_ctx))]
    return _named(recipe, bodies, EXPERIMENT_NAME_LIMIT, settings)

