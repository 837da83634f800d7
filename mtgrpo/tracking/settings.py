"""The ``tracking:`` section: its rules, and how it travels into a job.

The section's shape (keys, types, defaults) is in :mod:`mtgrpo.recipes.schema` (``TRACKING``);
a trainer config file for ``mtgrpo train`` takes the same section. The rules between values are
here: a SageMaker managed MLflow tracking server ARN is well formed and in the job's region; a
W&B key is never in a recipe (only the name of the secret that holds it); in-job logging is
refused where the job cannot reach a server (network isolation), and ``mtgrpo track`` writes the
same run from outside instead.

A job learns its settings from container environment variables (:meth:`to_environment`),
rendered only for recipes with a ``tracking:`` section, so other recipes' manifests and job
names do not change. The variables are MLflow's and W&B's own where those exist
(``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``, ``WANDB_PROJECT``, ...). DescribeTrainingJob
returns them too, which is how ``mtgrpo track JOB`` finds where a job's run goes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from mtgrpo.errors import Problem

# SageMaker managed MLflow: tracking servers, and MLflow apps (the serverless form).
TRACKING_SERVER_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):sagemaker:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"(?P<type>mlflow-tracking-server|mlflow-app)/(?P<name>[A-Za-z0-9](?:-*[A-Za-z0-9]){0,255})$")
URI = re.compile(r"^https?://[^\s/]+(?:/\S*)?$")
LOCAL_URI = re.compile(r"^(?:file:|sqlite:|\.{0,2}/)\S*$")
# Secrets Manager secret names (or ARNs); Kubernetes Secret names are a subset.
SECRET_NAME = re.compile(r"^(?:arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:)?"
                         r"[A-Za-z0-9/_+=.@-]{1,512}$")
K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
WANDB_KEY = re.compile(r"^(?:[0-9a-f]{40}|(?:local-|wandb_v\d+_)[A-Za-z0-9_-]{20,})$")
RESERVED_TAG_PREFIXES = ("mlflow.", "mtgrpo.")
MAX_ENV_TEXT = 512  # SageMaker's limit on one environment value

# The container environment (MLflow's and W&B's own names where they have one).
ENV_TRACKING = "MTGRPO_TRACKING"  # "1": the recipe has a tracking section
ENV_IN_JOB = "MTGRPO_TRACKING_IN_JOB"  # "true" / "false"
ENV_MLFLOW_URI = "MLFLOW_TRACKING_URI"
ENV_MLFLOW_EXPERIMENT = "MLFLOW_EXPERIMENT_NAME"
ENV_MLFLOW_TAGS = "MTGRPO_MLFLOW_RUN_TAGS"
ENV_WANDB_PROJECT = "WANDB_PROJECT"
ENV_WANDB_ENTITY = "WANDB_ENTITY"
ENV_WANDB_MODE = "WANDB_MODE"
ENV_WANDB_KEY_FROM = "MTGRPO_WANDB_KEY_FROM"
ENV_RECIPE = "MTGRPO_RECIPE"
ENV_IMAGE = "MTGRPO_IMAGE"
ENV_COMMIT = "MTGRPO_REPO_COMMIT"
ENV_OUTPUT_PATH = "MTGRPO_OUTPUT_PATH"  # job.output_path: where the model is uploaded


@dataclass(frozen=True)
class MlflowSettings:
    tracking_uri: str
    experiment: str = "mtgrpo"
    run_tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_arn(self) -> bool:
        return self.tracking_uri.startswith("arn:")


@dataclass(frozen=True)
class WandbSettings:
    project: str
    entity: str | None = None
    mode: str = "online"
    api_key_secret: str | None = None


@dataclass(frozen=True)
class TrackingSettings:
    """Where a job's run goes, and what the job knows about itself (recipe, image, commit)."""

    mlflow: MlflowSettings | None = None
    wandb: WandbSettings | None = None
    in_job: bool = True
    recipe: str = ""
    image: str = ""
    commit: str = ""
    output_path: str = ""

    @property
    def enabled(self) -> bool:
        return self.mlflow is not None or (self.wandb is not None
                                           and self.wandb.mode != "disabled")

    # -- from a checked section, and to and from a job's environment ---------------------------
    @classmethod
    def from_section(cls, section: Mapping[str, Any] | None, *, in_job: bool = True,
                     recipe: str = "", image: str = "", commit: str = "",
                     output_path: str = "") -> "TrackingSettings":
        section = section or {}
        mlflow = section.get("mlflow")
        wandb = section.get("wandb")
        return cls(
            mlflow=MlflowSettings(mlflow["tracking_uri"], mlflow.get("experiment") or "mtgrpo",
                                  dict(mlflow.get("run_tags") or {})) if mlflow else None,
            wandb=WandbSettings(wandb["project"], wandb.get("entity"),
                                wandb.get("mode") or "online",
                                wandb.get("api_key_secret")) if wandb else None,
            in_job=in_job, recipe=recipe, image=image, commit=commit, output_path=output_path)

    def to_environment(self) -> dict[str, str]:
        env = {ENV_TRACKING: "1", ENV_IN_JOB: "true" if self.in_job else "false"}
        if self.mlflow is not None:
            env[ENV_MLFLOW_URI] = self.mlflow.tracking_uri
            env[ENV_MLFLOW_EXPERIMENT] = self.mlflow.experiment
            if self.mlflow.run_tags:
                env[ENV_MLFLOW_TAGS] = json.dumps(dict(self.mlflow.run_tags), sort_keys=True,
                                                  separators=(",", ":"))
        if self.wandb is not None:
            env[ENV_WANDB_PROJECT] = self.wandb.project
            env[ENV_WANDB_MODE] = self.wandb.mode
            if self.wandb.entity:
                env[ENV_WANDB_ENTITY] = self.wandb.entity
            if self.wandb.api_key_secret:
                env[ENV_WANDB_KEY_FROM] = self.wandb.api_key_secret
        if self.recipe:
            env[ENV_RECIPE] = self.recipe
        if self.image:
            env[ENV_IMAGE] = self.image
        if self.commit:
            env[ENV_COMMIT] = self.commit
        if self.output_path:
            env[ENV_OUTPUT_PATH] = self.output_path
        return env

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> "TrackingSettings | None":
        """The settings a job's environment carries; None when its recipe has no section."""
        if env.get(ENV_TRACKING) != "1":
            return None
        mlflow = wandb = None
        if env.get(ENV_MLFLOW_URI):
            try:
                tags = json.loads(env.get(ENV_MLFLOW_TAGS) or "{}")
            except json.JSONDecodeError:
                tags = {}
            mlflow = MlflowSettings(env[ENV_MLFLOW_URI],
                                    env.get(ENV_MLFLOW_EXPERIMENT) or "mtgrpo",
                                    {str(k): str(v) for k, v in dict(tags).items()})
        if env.get(ENV_WANDB_PROJECT):
            wandb = WandbSettings(env[ENV_WANDB_PROJECT], env.get(ENV_WANDB_ENTITY) or None,
                                  env.get(ENV_WANDB_MODE) or "online",
                                  env.get(ENV_WANDB_KEY_FROM) or None)
        return cls(mlflow=mlflow, wandb=wandb, in_job=env.get(ENV_IN_JOB, "true") == "true",
                   recipe=env.get(ENV_RECIPE, ""), image=env.get(ENV_IMAGE, ""),
                   commit=env.get(ENV_COMMIT, ""), output_path=env.get(ENV_OUTPUT_PATH, ""))


# -- recipes ------------------------------------------------------------------------------------

def in_job_for(section: Mapping[str, Any], backend: str, job: Mapping[str, Any]) -> bool:
    """Whether the job logs itself: ``auto`` means when it can reach the network."""
    mode = section.get("in_job", "auto")
    if mode == "auto":
        return backend == "kubeflow" or not job.get("enable_network_isolation", True)
    return mode == "always"


def recipe_settings(recipe) -> TrackingSettings | None:
    """A recipe's tracking settings (None without a ``tracking:`` section)."""
    section = recipe.values.get("tracking")
    if not section:
        return None
    return TrackingSettings.from_section(
        section, in_job=in_job_for(section, recipe.backend, recipe.job), recipe=recipe.name,
        image=str(recipe.job.get("image_uri") or ""),
        output_path=str(recipe.job.get("output_path") or ""))


def recipe_environment(recipe) -> dict[str, str]:
    """The environment variables a recipe's job gets for tracking (none without a section)."""
    settings = recipe_settings(recipe)
    return {} if settings is None else settings.to_environment()


def check_tracking(recipe) -> list[Problem]:
    """Problems of a recipe's ``tracking:`` section (after the schema checked its shape)."""
    section = recipe.values.get("tracking")
    if not section:
        return []
    source = recipe.source
    problems = check_section(section, source, "tracking", region=recipe.job.get("region"),
                             local=False)
    isolated = recipe.backend != "kubeflow" and recipe.job.get("enable_network_isolation", True)
    if section.get("in_job") == "always" and isolated:
        problems.append(Problem(source, "tracking.in_job", "a network-isolated job cannot reach "
                                "a tracking server", "auto or never (then `mtgrpo track JOB` or "
                                "`mtgrpo wait --track` writes the run from outside), or "
                                "job.enable_network_isolation: false with a "
                                "job.security_exceptions reason"))
    wandb = section.get("wandb")
    if (wandb and wandb.get("mode") == "online" and not wandb.get("api_key_secret")
            and in_job_for(section, recipe.backend, recipe.job)):
        problems.append(Problem(source, "tracking.wandb.api_key_secret", "online W&B logging "
                                "from the job needs the W&B API key", "the name of a secret "
                                "that holds it (Secrets Manager on SageMaker, a Kubernetes "
                                "Secret with key WANDB_API_KEY on Kubeflow); or mode offline"))
    if wandb and wandb.get("api_key_secret") and recipe.backend == "kubeflow" and \
            not K8S_NAME.match(wandb["api_key_secret"]):
        problems.append(Problem(source, "tracking.wandb.api_key_secret", "not a Kubernetes "
                                "Secret name", "lower-case letters, digits, '-' and '.'"))
    env = TrackingSettings.from_section(section, recipe=recipe.name).to_environment()
    for name, value in sorted(env.items()):
        if len(value) > MAX_ENV_TEXT:
            problems.append(Problem(source, "tracking", f"{name} would be {len(value)} "
                                    f"characters", f"at most {MAX_ENV_TEXT} (fewer run_tags)"))
    return problems


def check_section(section: Mapping[str, Any], source: str, path: str, *,
                  region: str | None, local: bool) -> list[Problem]:
    """Rules of one checked section: the MLflow URI or ARN, run tags, the W&B key's secret.

    ``local``: a ``mtgrpo train`` config, where a file store (``file:``, ``sqlite:``) is fine.
    """
    problems: list[Problem] = []
    mlflow = section.get("mlflow")
    if mlflow:
        uri = mlflow.get("tracking_uri", "")
        key = f"{path}.mlflow.tracking_uri"
        if uri.startswith("arn:"):
            problems += check_arn(uri, source, key, region)
        elif not URI.match(uri) and not (local and LOCAL_URI.match(uri)):
            problems.append(Problem(source, key, f"not a tracking server URI: {uri!r}",
                                    "https://HOST[/PATH], or a SageMaker MLflow tracking server "
                                    "ARN" + (", file:DIR, sqlite:///FILE" if local else "")))
        if not str(mlflow.get("experiment", "x")).strip():
            problems.append(Problem(source, f"{path}.mlflow.experiment", "empty",
                                    "an experiment name"))
        for tag in mlflow.get("run_tags") or {}:
            if tag.startswith(RESERVED_TAG_PREFIXES) or not 0 < len(tag) <= 250:
                problems.append(Problem(source, f"{path}.mlflow.run_tags.{tag}",
                                        "reserved or too long a tag name", "1 to 250 characters, "
                                        "not starting with mlflow. or mtgrpo."))
    wandb = section.get("wandb")
    if wandb:
        secret = wandb.get("api_key_secret")
        key = f"{path}.wandb.api_key_secret"
        if secret and WANDB_KEY.match(secret):
            problems.append(Problem(source, key, "the value looks like a W&B API key (not "
                                    "shown); keys never go into recipes or manifests",
                                    "the name of the secret that holds the key"))
        elif secret and not SECRET_NAME.match(secret):
            problems.append(Problem(source, key, f"not a secret name: {secret!r}",
                                    "a Secrets Manager secret name or ARN, or a Kubernetes "
                                    "Secret name"))
    return problems


def check_arn(arn: str, source: str, key: str, region: str | None) -> list[Problem]:
    match = TRACKING_SERVER_ARN.match(arn)
    if match is None:
        return [Problem(source, key, f"not a SageMaker MLflow tracking server ARN: {arn!r}",
                        "arn:aws:sagemaker:REGION:ACCOUNT:mlflow-tracking-server/NAME (or "
                        "mlflow-app/NAME)")]
    if region and match.group("region") != region:
        return [Problem(source, key, f"the tracking server is in {match.group('region')}, the "
                        f"job in {region}", f"a tracking server in {region} (SageMaker reaches "
                        "a managed MLflow server in the job's own region)")]
    return []
