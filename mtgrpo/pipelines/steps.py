"""What the pipeline's steps do at run time (inside the cluster), as plain testable functions.

The kfp components (``mtgrpo.pipelines.components``) are thin wrappers around these. Each step
creates one resource and waits with :func:`mtgrpo.operate.create_and_wait`, the same code as
``mtgrpo wait``; a cancelled run's SIGTERM deletes what the step created, so the job stops.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from mtgrpo.errors import UserError
from mtgrpo.operate import connect, create_and_wait
from mtgrpo.operate.wait import Outcome


class StepFailed(RuntimeError):
    """The job did not complete: the step (and the run) fails with the job's reason."""


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _run(body: dict, timeout_s: float, **wait_options) -> Outcome:
    kube = connect(namespace=body["metadata"].get("namespace"))
    outcome = create_and_wait(kube, body, timeout_s=timeout_s, progress=_progress,
                              **wait_options)
    if not outcome.ok:
        raise StepFailed(outcome.message)
    return outcome


def tune(tuning_job: dict, timeout_s: float, **wait_options) -> dict[str, Any]:
    """Create the HyperParameterTuningJob, wait, and return its best trial."""
    outcome = _run(tuning_job, timeout_s, **wait_options)
    best = outcome.job.best
    if not best.get("name"):
        raise StepFailed(f"{outcome.job.name}: Completed without a best training job")
    return {"tuning_job": outcome.job.job_name, "best_training_job": best["name"],
            "hyperparameters": json.dumps(best["hyperparameters"], sort_keys=True)}


def train(bundle: dict, hyperparameters: dict[str, str], timeout_s: float,
          **wait_options) -> dict[str, str]:
    """Create the recipe's TrainingJob with the tuned hyperparameters, wait, return its model."""
    from mtgrpo.validate import check_resources, default_crd_dir

    try:
        body = training_job_from_bundle(bundle, hyperparameters)
        # The same checks as `mtgrpo validate`: a bad value fails here, not as ACK.Terminal.
        problems = check_resources([body], source=f"{bundle['source']} (tuned)",
                                   crd_dir=default_crd_dir())
        if problems:
            raise UserError(problems)
    except UserError as err:
        raise StepFailed("; ".join(err.lines())) from None
    outcome = _run(body, timeout_s, **wait_options)
    if not outcome.job.model_artifact:
        raise StepFailed(f"{outcome.job.name}: Completed without a model artifact")
    return {"training_job": outcome.job.job_name, "model_artifact": outcome.job.model_artifact}


# -- the recipe, carried into the pipeline ---------------------------------------------------

def make_bundle(recipe, settings, deletion_policy: str) -> dict:
    """Everything ``training_job_for`` needs at run time, as JSON-able data.

    The recipe as merged (``extends`` resolved), its source path, the project settings and the
    project's templates (users may adapt them): the step types the recipe in memory
    (``recipe_from_data``) and calls the renderer with those templates, so the TrainingJob is
    exactly what ``mtgrpo render`` would write for those hyperparameters, named by the same
    content hash.
    """
    from mtgrpo.ack.render import TEMPLATES
    from mtgrpo.render.templating import PACKAGED_TEMPLATES

    templates = {}
    for file in sorted(TEMPLATES.values()):
        own = settings.templates_dir / file
        templates[file] = (own if own.is_file() else PACKAGED_TEMPLATES / file).read_text()
    source = recipe.source if ".." not in Path(recipe.source).parts else f"recipes/{recipe.name}.yaml"
    return {"source": source, "recipe": recipe.data,
            "project": {"namespace": settings.namespace, "deletion_policy": deletion_policy,
                        "require_image_digest": settings.require_image_digest},
            "templates": templates}


def training_job_from_bundle(bundle: dict, hyperparameters: dict[str, str]) -> dict:
    """The TrainingJob body for the tuned hyperparameters, rendered in memory from the bundle
    (the same typed recipe, settings and templates ``mtgrpo render`` uses; no files)."""
    from mtgrpo.recipes import recipe_from_data
    from mtgrpo.render import training_job_for
    from mtgrpo.render.settings import settings_from_data

    recipe = recipe_from_data(bundle["recipe"], source=bundle["source"])
    if recipe.problems:
        raise UserError(list(recipe.problems))
    settings = settings_from_data(bundle["project"], Path("."),
                                  templates=tuple(sorted(bundle["templates"].items())))
    return training_job_for(recipe, settings, hyperparameters).body
