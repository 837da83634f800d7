"""What the pipeline's steps do at run time (inside the cluster), as plain testable functions.

The kfp components (``mtgrpo.pipelines.components``) are thin wrappers around these. Each step
creates one resource and waits with :func:`mtgrpo.operate.create_and_wait`, the same code as
``mtgrpo wait``; a cancelled run's SIGTERM deletes what the step created, so the job stops.
"""

from __future__ import annotations

import json
import sys
import tempfile
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
    project's templates (users may adapt them): the step rebuilds the same files in a temporary
    root and calls the renderer, so the TrainingJob is exactly what ``mtgrpo render`` would
    write for those hyperparameters, named by the same content hash.
    """
    from mtgrpo.render.templating import PACKAGED_TEMPLATES, TEMPLATES

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
    import yaml

    from mtgrpo.recipes import load_recipe
    from mtgrpo.render import load_settings, training_job_for

    with tempfile.TemporaryDirectory(prefix="mtgrpo-recipe-") as tmp:
        root = Path(tmp)
        recipe_path = root / bundle["source"]
        (root / "recipes").mkdir(parents=True)
        recipe_path.parent.mkdir(parents=True, exist_ok=True)
        recipe_path.write_text(yaml.safe_dump(bundle["recipe"], sort_keys=True))
        (root / "recipes" / "_project.yaml").write_text(yaml.safe_dump(bundle["project"]))
        (root / "templates").mkdir()
        for name, text in bundle["templates"].items():
            (root / "templates" / name).write_text(text)
        recipe = load_recipe(recipe_path, root=root)
        return training_job_for(recipe, load_settings(root), hyperparameters).body
