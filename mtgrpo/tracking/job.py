"""What a run holds, and the in-job tracker's start and end (called from ``train.run``).

The parameters, tags, summary metrics and artifacts are built here for both paths (in the job,
and ``mtgrpo track`` from outside), so they are the same run whichever wrote it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from mtgrpo.tracking.identity import RunIdentity, job_identity
from mtgrpo.tracking.settings import TrackingSettings

CURVES_FILE = "curves.png"
SUMMARY_FILE = "eval_summary.json"
MODEL_FILE = "model_location.json"
ALGORITHM_TAG = "mtgrpo.algorithm"
RECIPE_TAG = "mtgrpo.recipe"


def run_params(hyperparameters: Mapping[str, str], *, recipe: str, job_name: str,
               image: str, commit: str) -> dict[str, str]:
    """The run's parameters: the resolved trainer hyperparameters (SageMaker's string form,
    SageMaker's own ``_``/``sagemaker_`` keys left out) and where the run came from."""
    params = {k: str(v) for k, v in hyperparameters.items()
              if not k.startswith("_") and not k.startswith("sagemaker_")}
    params.update({"recipe": recipe, "job_name": job_name, "image": image})
    if commit:
        params["repo_commit"] = commit
    return {k: v for k, v in params.items() if v != "" or k in hyperparameters}


def run_tags(settings: TrackingSettings, algorithm: str) -> dict[str, str]:
    """Tags that make runs easy to compare side by side: the algorithm (mt_grpo against a
    grpo_or baseline) and the recipe."""
    tags = {ALGORITHM_TAG: algorithm}
    if settings.recipe:
        tags[RECIPE_TAG] = settings.recipe
    return tags


def summary_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The eval summary's numbers as metrics: ``final_<name>`` for the final evaluation (the
    per-step ``eval_*`` series keep their names), ``train_seconds``, ``global_step``."""
    out = {f"final_{k}": float(v) for k, v in (summary.get("eval") or {}).items()
           if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for key in ("train_seconds", "global_step"):
        if isinstance(summary.get(key), (int, float)):
            out[key] = float(summary[key])
    return out


def write_curves(records: Sequence[Mapping[str, Any]], path: Path, label: str) -> Path | None:
    """The curves PNG of ``mtgrpo plot`` for one run; None without matplotlib or records."""
    try:
        from mtgrpo.curves import plot_runs
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    if not records:
        return None
    return plot_runs([(label, list(records))], path, title=label)


def model_location(env: Mapping[str, str], job_name: str, model_dir: str) -> str:
    """Where the model ends up: SageMaker uploads ``model_dir`` to
    ``<output_path>/<job>/output/model.tar.gz``; elsewhere the directory itself."""
    output = env.get("MTGRPO_OUTPUT_PATH", "")
    if env.get("TRAINING_JOB_NAME") and output:
        return f"{output.rstrip('/')}/{job_name}/output/model.tar.gz"
    return str(model_dir)


def checkpoint_step(checkpoint: str | Path | None) -> int:
    match = re.search(r"checkpoint-(\d+)$", str(checkpoint or ""))
    return int(match.group(1)) if match else 0


def status_for(err: BaseException) -> str:
    """MLflow's run status for an exception that ended training."""
    if isinstance(err, KeyboardInterrupt) or type(err).__name__ == "TrainingInterrupted":
        return "KILLED"
    return "FAILED"


def start_tracker(settings: TrackingSettings, config, paths, checkpoint, *,
                  identity: RunIdentity | None = None, sinks=None):
    """The running tracker of this process's job, or None when nothing is to be logged here."""
    if not settings.enabled or not settings.in_job:
        return None
    from mtgrpo.tracking.sinks import make_sinks
    from mtgrpo.tracking.tracker import Tracker

    env = os.environ
    if identity is None:
        raw = _raw_hyperparameters(env)
        identity = job_identity(env, raw, default_name=Path(paths.output_dir).name)
    params = run_params(config.to_hyperparameters(), recipe=settings.recipe,
                        job_name=identity.name, image=settings.image,
                        commit=settings.commit or env.get("MTGRPO_REPO_COMMIT", ""))
    if sinks is None:
        sinks = make_sinks(settings, Path(paths.output_dir) / "wandb")
    tracker = Tracker(sinks, identity, params=params, tags=run_tags(settings, config.algorithm))
    return tracker.start(resume_step=checkpoint_step(checkpoint))


def finish_tracker(tracker, summary: Mapping[str, Any], paths) -> bool:
    """Log the eval summary, the curves PNG and the model's location; end the run (KILLED
    after a stop request: the resumed job continues it)."""
    from mtgrpo.trainer.metrics_log import read_metrics

    out = Path(paths.output_dir)
    step = int(summary.get("global_step") or 0)
    tracker.log_summary(summary_metrics(summary), step)
    if (out / SUMMARY_FILE).is_file():
        tracker.log_artifact(out / SUMMARY_FILE)
    metrics = out / "metrics.jsonl"
    records = read_metrics(metrics) if metrics.is_file() else []
    try:
        curves = write_curves(records, out / CURVES_FILE, tracker.identity.name)
    except Exception:  # noqa: BLE001 - a plot never fails a finished training
        curves = None
    if curves is not None:
        tracker.log_artifact(curves)
    if summary.get("stopped_early"):  # a stop (SIGTERM): no final model; the job resumes
        return tracker.close("KILLED")
    location = model_location(os.environ, tracker.identity.name, str(paths.model_dir))
    tracker.set_model_location(location)
    model_file = out / MODEL_FILE
    model_file.write_text(json.dumps({"model": location}, sort_keys=True) + "\n",
                          encoding="utf-8")
    tracker.log_artifact(model_file)
    return tracker.close("FINISHED")


def _raw_hyperparameters(env: Mapping[str, str]) -> dict[str, str]:
    """SageMaker's hyperparameters.json as written (a trial's ``_tuning_objective_metric``
    marks it as a trial)."""
    from mtgrpo.sagemaker.contract import OptML

    try:
        data = json.loads(OptML.from_env(env).hyperparameters_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
