"""Compile a tune-then-train Kubeflow pipeline for a tuning recipe (kfp 2.x, offline).

Graph: ``tune`` (create the recipe's HyperParameterTuningJob, wait, read the best trial) ->
``train`` (create the recipe's TrainingJob with the best trial's tuned hyperparameters, named by
content hash, wait) -> pipeline output ``model_artifact`` (the S3 URI of model.tar.gz).

The tuning job's manifest and the recipe (for the TrainingJob, rendered at run time once the
hyperparameters are known) are compiled into the pipeline as constants, so the compiled file
depends only on the recipe, the project files and the options: the same inputs give the same
bytes. Resources the pipeline creates carry ``services.k8s.aws/deletion-policy: delete``
(not hashed into names), so deleting them, as a cancelled step does, stops the SageMaker job.
"""

from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mtgrpo.errors import Problem, UserError

DELETION_POLICY = "delete"


@dataclass(frozen=True)
class PipelineOptions:
    image: str = ""  # default: the recipe's trainer image (job.image_uri)
    packages: tuple[str, ...] = field(default_factory=tuple)  # pip-installed at step start
    tuning_timeout_s: float = 0.0  # default: from the recipe's limits
    training_timeout_s: float = 0.0


def pipeline_inputs(recipe_path: Path | str) -> tuple[object, object, dict, dict]:
    """The recipe, its settings, the tuning job body and the recipe bundle for the train step."""
    from mtgrpo.pipelines.steps import make_bundle
    from mtgrpo.recipes import find_root, load_recipe
    from mtgrpo.ack.render import DELETION_POLICY_ANNOTATION
    from mtgrpo.render import build_resources, load_settings

    from mtgrpo.backends import require

    recipe = load_recipe(recipe_path)
    require(recipe, "pipeline")  # one line for a backend the pipeline does not drive
    settings = load_settings(find_root(Path(recipe_path)))
    if recipe.tuning is None:
        raise UserError(Problem(recipe.source, "tuning", "the pipeline needs a tuning recipe",
                                "a recipe with a tuning: section"))
    tuning = next(r for r in build_resources(recipe, settings)
                  if r.kind == "HyperParameterTuningJob")
    body = copy.deepcopy(tuning.body)
    body["metadata"].setdefault("annotations", {})[DELETION_POLICY_ANNOTATION] = DELETION_POLICY
    return recipe, settings, body, make_bundle(recipe, settings, DELETION_POLICY)


def build_pipeline(recipe_path: Path | str, options: PipelineOptions = PipelineOptions()):
    """The kfp pipeline function for ``recipe_path``."""
    from kfp import dsl

    from mtgrpo.pipelines import components

    recipe, settings, tuning_body, bundle = pipeline_inputs(recipe_path)
    job = recipe.job
    image = options.image or job["image_uri"]
    decorate = dsl.component(base_image=image, packages_to_install=list(options.packages) or None,
                             install_kfp_package=bool(options.packages))
    tune_op = decorate(components.tune_step)
    train_op = decorate(components.train_step)
    limits = recipe.tuning
    # Waves of parallel trials, each at most max_run, plus an hour of queueing and start-up.
    waves = -(-int(limits["max_jobs"]) // max(1, int(limits["max_parallel_jobs"])))
    tuning_timeout = options.tuning_timeout_s or waves * float(job["max_run"]) + 3600
    training_timeout = options.training_timeout_s or float(job.get("max_wait") or job["max_run"]) + 3600
    name = f"{recipe.name}-tune-then-train"

    def tune_then_train() -> str:
        tuned = tune_op(tuning_job=json.dumps(tuning_body, sort_keys=True),
                        timeout_s=tuning_timeout)
        tuned.set_display_name("tune")
        tuned.set_caching_options(False)  # a cached result would skip creating the job
        trained = train_op(recipe_bundle=json.dumps(bundle, sort_keys=True),
                           hyperparameters=tuned.outputs["hyperparameters"],
                           timeout_s=training_timeout)
        trained.set_display_name("train")
        trained.set_caching_options(False)
        return trained.outputs["model_artifact"]

    # This module uses postponed annotations; kfp needs the real return type.
    tune_then_train.__annotations__["return"] = str
    return dsl.pipeline(name=name, description=f"Tune, then train the best trial of "
                                               f"{recipe.source} (compiled by mtgrpo)")(
        tune_then_train)


def compile_pipeline(recipe_path: Path | str, options: PipelineOptions = PipelineOptions()) -> bytes:
    """The compiled pipeline YAML (deterministic: same inputs, same bytes)."""
    from kfp import compiler

    pipeline = build_pipeline(recipe_path, options)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(pipeline, str(out))
        return out.read_bytes()
