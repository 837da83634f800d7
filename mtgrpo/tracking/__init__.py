"""Experiment tracking: MLflow (SageMaker managed MLflow too) and Weights & Biases.

- :mod:`mtgrpo.tracking.settings`: the ``tracking:`` section of recipes and trainer configs, its
  checks, and how it travels to a job (container environment variables).
- :mod:`mtgrpo.tracking.identity`: which run a job writes (one per job; a tuning trial nested
  under its tuning job's run), found again by name so a resumed job continues its run.
- :mod:`mtgrpo.tracking.sinks`: the MLflow and W&B writers.
- :mod:`mtgrpo.tracking.tracker`: in-job logging on a background thread that never stops or
  slows training.
- :mod:`mtgrpo.tracking.outside`: ``mtgrpo track``: the same runs, written from outside the job
  (network-isolated jobs), from the job's output or CloudWatch.

Importing this package is cheap: mlflow and wandb are imported only when a run is written.
"""
