"""``mtgrpo track JOB...``: write SageMaker jobs' runs to MLflow and/or W&B from outside the jobs.

For network-isolated jobs (the default), which cannot reach a tracking server themselves. A JOB
is a training job or a tuning job (a parent run, and one nested run per trial). Parameters come
from DescribeTrainingJob, metrics from the job's output ``metrics.jsonl`` once it has finished,
else from CloudWatch; where the runs go from the job's environment (the recipe's ``tracking:``
section), ``--recipe``, or the flags below. Idempotent: only what a run lacks is written, so
run it as often as you like, e.g. while the job runs and once more at the end (docs/metrics.md).
Needs ``mtgrpo[tracking]`` and AWS credentials (sagemaker:DescribeTrainingJob,
sagemaker:DescribeHyperParameterTuningJob, sagemaker:ListTrainingJobsForHyperParameterTuningJob,
s3:GetObject on the output, cloudwatch:ListMetrics, cloudwatch:GetMetricData).
"""

from __future__ import annotations

from pathlib import Path

from mtgrpo.errors import Problem, UserError


def add_arguments(parser) -> None:
    parser.add_argument("jobs", nargs="+", metavar="JOB",
                        help="SageMaker training or tuning job name")
    add_tracking_arguments(parser)
    parser.add_argument("--region", default="", help="AWS region (default: AWS configuration)")
    parser.add_argument("--host", default="algo-1", help="the host whose CloudWatch series are "
                                                         "read (default algo-1)")


def add_tracking_arguments(parser) -> None:
    """Where the runs go; each flag wins over the job's environment and --recipe."""
    parser.add_argument("--recipe", type=Path, default=None,
                        help="a recipe whose tracking: section says where the runs go")
    parser.add_argument("--mlflow-uri", default="", help="MLflow tracking URI or SageMaker "
                                                         "MLflow tracking server ARN")
    parser.add_argument("--experiment", default="", help="MLflow experiment (default: the "
                                                         "job's, else mtgrpo)")
    parser.add_argument("--wandb-project", default="", help="W&B project")
    parser.add_argument("--wandb-entity", default="", help="W&B entity")
    parser.add_argument("--wandb-mode", default="", choices=("", "online", "offline"),
                        help="W&B mode (default: the job's, else online)")


def settings_chooser(args):
    """``(job's settings, job name) -> settings``: flags over --recipe over the environment."""
    from dataclasses import replace

    from mtgrpo.tracking.settings import (MlflowSettings, TrackingSettings, WandbSettings,
                                          check_arn)

    recipe_settings = None
    if args.recipe is not None:
        from mtgrpo.recipes import load_recipe
        from mtgrpo.tracking.settings import recipe_settings as of_recipe

        recipe_settings = of_recipe(load_recipe(args.recipe))
    if args.mlflow_uri.startswith("arn:"):
        problems = check_arn(args.mlflow_uri, "mtgrpo track", "--mlflow-uri", args.region or None)
        if problems:
            raise UserError(problems)

    def choose(from_job, name: str):
        settings = recipe_settings or from_job or TrackingSettings()
        mlflow, wandb = settings.mlflow, settings.wandb
        if args.mlflow_uri:
            mlflow = replace(mlflow, tracking_uri=args.mlflow_uri) if mlflow else \
                MlflowSettings(args.mlflow_uri)
        if args.experiment and mlflow:
            mlflow = replace(mlflow, experiment=args.experiment)
        if args.wandb_project:
            wandb = replace(wandb, project=args.wandb_project) if wandb else \
                WandbSettings(args.wandb_project)
        if wandb and args.wandb_entity:
            wandb = replace(wandb, entity=args.wandb_entity)
        if wandb and args.wandb_mode:
            wandb = replace(wandb, mode=args.wandb_mode)
        if mlflow is None and wandb is None:
            raise UserError(Problem(name, "tracking", "no tracking settings: the job's "
                                    "environment names none", "--mlflow-uri URI, "
                                    "--wandb-project NAME, or --recipe FILE with a tracking: "
                                    "section"))
        return replace(settings, mlflow=mlflow, wandb=wandb)

    return choose


def track_jobs(names, args) -> list:
    from mtgrpo.operate.aws import aws_errors, client
    from mtgrpo.tracking.outside import track
    from mtgrpo.tracking.sinks import make_sinks

    choose = settings_chooser(args)
    with aws_errors(f"tracking {', '.join(names)}"):
        return track(names, sagemaker=client("sagemaker", args.region),
                     s3=client("s3", args.region), cloudwatch=client("cloudwatch", args.region),
                     settings_for=choose, make_sinks=make_sinks, host=args.host)


def run(args) -> int:
    track_jobs(args.jobs, args)
    return 0
