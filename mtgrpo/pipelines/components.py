"""The pipeline's two components: small Python functions run by the KFP launcher in a pod.

kfp ships each function's source into the pod, so everything it uses is imported inside it;
the work is done by :mod:`mtgrpo.pipelines.steps`, which the image must provide (see
docs/operate.md: the trainer image, which has mtgrpo, or a light image that pip-installs it).
"""

# No `from __future__ import annotations`: kfp reads the real types off the signatures.
from typing import NamedTuple


def tune_step(tuning_job: str, timeout_s: float) -> NamedTuple(
        "TuneOutputs", [("tuning_job", str), ("best_training_job", str),
                        ("hyperparameters", str)]):
    """Create the HyperParameterTuningJob and wait; its best trial and tuned hyperparameters."""
    import json
    from collections import namedtuple

    from mtgrpo.pipelines import steps

    out = steps.tune(json.loads(tuning_job), timeout_s)
    result = namedtuple("TuneOutputs", ["tuning_job", "best_training_job", "hyperparameters"])
    return result(out["tuning_job"], out["best_training_job"], out["hyperparameters"])


def train_step(recipe_bundle: str, hyperparameters: str, timeout_s: float) -> NamedTuple(
        "TrainOutputs", [("training_job", str), ("model_artifact", str)]):
    """Create the recipe's TrainingJob with the tuned hyperparameters and wait; its model URI."""
    import json
    from collections import namedtuple

    from mtgrpo.pipelines import steps

    out = steps.train(json.loads(recipe_bundle), json.loads(hyperparameters), timeout_s)
    result = namedtuple("TrainOutputs", ["training_job", "model_artifact"])
    return result(out["training_job"], out["model_artifact"])
