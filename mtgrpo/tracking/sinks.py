"""The writers of a run: MLflow (any tracking server; a SageMaker managed MLflow tracking server
through the ``sagemaker-mlflow`` plugin) and Weights & Biases.

Both the in-job tracker and ``mtgrpo track`` use them, so the two paths write the same run:

- one run per job, named by the job and tagged ``mtgrpo.job_name``; a tuning trial's run is
  nested under its tuning job's run (MLflow ``mlflow.parentRunId``; W&B ``group``);
- parameters: the resolved trainer hyperparameters plus ``recipe``, ``job_name``, ``image``,
  ``repo_commit`` (when known);
- one metric per ``metrics.jsonl`` key (its name unchanged), at the record's ``step``;
- the tag ``mtgrpo.last_step`` (MLflow) after every step, so a resumed job or a second
  ``mtgrpo track`` logs only the steps beyond it.

A sink's methods raise on failure; the tracker (tracker.py) retries and never lets a failure
reach training.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, cast

from mtgrpo.tracking.identity import TUNING, RunIdentity, wandb_run_id
from mtgrpo.tracking.settings import MlflowSettings, WandbSettings

JOB_TAG = "mtgrpo.job_name"
KIND_TAG = "mtgrpo.kind"
LAST_STEP_TAG = "mtgrpo.last_step"
MODEL_TAG = "mtgrpo.model_location"
PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_VALUE = 6000  # MLflow's limit on a parameter value
BATCH = 100  # MLflow's log_batch: at most 100 params or tags, 1000 metrics


def numeric_values(record: Mapping[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record's metrics (``step`` is the axis, not a metric)."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class MlflowSink:
    name = "mlflow"

    def __init__(self, settings: MlflowSettings):
        self.settings = settings
        self.client = None
        self.run_id: str | None = None
        self.parent_id: str | None = None
        self.last_step = 0

    @property
    def where(self) -> str:
        return self.settings.tracking_uri

    def _client(self):
        if self.client is None:
            if self.settings.is_arn:  # the plugin resolves arn: URIs; only needed then
                import sagemaker_mlflow  # noqa: F401 - registers the arn scheme
            from mlflow.tracking import MlflowClient

            # The tracker retries and then waits (tracker.py): MLflow's own defaults (7 retries
            # with backoff, 120 s per request) would hold a run's records for minutes.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

            self.client = MlflowClient(tracking_uri=self.settings.tracking_uri)
        return self.client

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        client = self._client()
        found = client.get_experiment_by_name(self.settings.experiment)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                client.restore_experiment(found.experiment_id)
            return found.experiment_id
        try:
            return client.create_experiment(self.settings.experiment)
        except MlflowException:  # another job created it meanwhile
            return client.get_experiment_by_name(self.settings.experiment).experiment_id

    def find_run(self, experiment_id: str, name: str):
        """The run tagged with job ``name`` (the oldest, should two have raced), or None."""
        escaped = name.replace("'", "\\'")
        runs = self._client().search_runs(
            [experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{escaped}'",
            order_by=["attributes.start_time ASC"], max_results=50)
        runs = sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))
        return runs[0] if runs else None

    def _find_or_create(self, experiment_id: str, name: str, kind: str,
                        parent_id: str | None, tags: Mapping[str, str]):
        client = self._client()
        run = self.find_run(experiment_id, name)
        if run is not None:
            return run
        all_tags = {**tags, JOB_TAG: name, KIND_TAG: kind}
        if parent_id:
            all_tags[PARENT_TAG] = parent_id
        created = client.create_run(experiment_id, tags=all_tags, run_name=name)
        # Trials of one tuning job start together and may each create the parent: keep the
        # oldest, drop ours if another won.
        winner = self.find_run(experiment_id, name)
        if winner is not None and winner.info.run_id != created.info.run_id:
            client.delete_run(created.info.run_id)
            return winner
        return client.get_run(created.info.run_id)

    def open(self, identity: RunIdentity, params: Mapping[str, str],
             tags: Mapping[str, str]) -> int:
        """Find or create the run (and its parent); log missing params; return its last step."""
        from mlflow.entities import Param, RunTag

        client = self._client()
        experiment_id = self._experiment_id()
        tags = {**self.settings.run_tags, **tags}
        if identity.parent:
            parent = self._find_or_create(experiment_id, identity.parent, TUNING, None, tags)
            self.parent_id = parent.info.run_id
        run = self._find_or_create(experiment_id, identity.name, identity.kind,
                                   self.parent_id, tags)
        self.run_id = run.info.run_id
        have = run.data.params
        new = [Param(k, str(v)[:MAX_PARAM_VALUE]) for k, v in sorted(params.items())
               if k not in have]
        set_tags = [RunTag(k, str(v)) for k, v in sorted(tags.items())
                    if run.data.tags.get(k) != str(v)]
        for i in range(0, max(len(new), len(set_tags)), BATCH):
            client.log_batch(self.run_id, params=new[i:i + BATCH], tags=set_tags[i:i + BATCH])
        if run.info.status != "RUNNING":
            client.update_run(self.run_id, status="RUNNING")
        self.last_step = int(run.data.tags.get(LAST_STEP_TAG, "0") or 0)
        return self.last_step

    def logged_steps(self, keys: Iterable[str]) -> dict[str, set[int]]:
        """The steps each metric already has (``mtgrpo track`` fills only what is missing)."""
        client = self._client()
        return {key: {m.step for m in client.get_metric_history(self.run_id, key)}
                for key in keys}

    def log(self, step: int, values: Mapping[str, float], *, timestamp_ms: int | None = None
            ) -> None:
        from mlflow.entities import Metric, RunTag

        stamp = timestamp_ms or int(time.time() * 1000)
        metrics = [Metric(k, float(v), stamp, int(step)) for k, v in sorted(values.items())]
        tags = [RunTag(LAST_STEP_TAG, str(int(step)))] if step > self.last_step else []
        self._client().log_batch(self.run_id, metrics=metrics, tags=tags)
        self.last_step = max(self.last_step, int(step))

    def artifact(self, path: Path, folder: str | None = None) -> None:
        self._client().log_artifact(self.run_id, str(path), folder)

    def tag(self, key: str, value: str) -> None:
        self._client().set_tag(self.run_id, key, value)

    def summary(self, values: Mapping[str, float], step: int) -> None:
        self.log(step, values)

    def close(self, status: str) -> None:
        if self.run_id is not None:
            self._client().set_terminated(self.run_id, status=status)


class WandbSink:
    """A W&B run with a deterministic id (the job's name) and ``resume="allow"``: a resumed job
    continues it. Trials share ``group`` = the tuning job; W&B keeps its own step counter and
    drops a step lower than one it holds, so a resumed job never duplicates one."""

    name = "wandb"

    def __init__(self, settings: WandbSettings, directory: Path | None = None):
        self.settings = settings
        self.directory = directory
        self.run: Any = None  # a wandb Run once open
        self.last_step = 0

    @property
    def where(self) -> str:
        return f"W&B project {self.settings.project}"

    def open(self, identity: RunIdentity, params: Mapping[str, str],
             tags: Mapping[str, str]) -> int:
        import wandb

        _api_key_from_secret(self.settings)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.settings.project, entity=self.settings.entity,
            mode=cast(Any, self.settings.mode), id=wandb_run_id(identity.name),
            name=identity.name,
            resume="allow", group=identity.parent or identity.name,
            job_type="trial" if identity.parent else identity.kind,
            config=dict(params), tags=[f"{k}={v}" for k, v in sorted(tags.items())][:64],
            dir=str(self.directory) if self.directory is not None else None,
            settings=wandb.Settings(console="off", x_disable_stats=True))
        self.last_step = max(int(getattr(self.run, "step", 0) or 0) - 1, 0)
        return self.last_step

    def log(self, step: int, values: Mapping[str, float], *, timestamp_ms: int | None = None
            ) -> None:
        self.run.log(dict(values), step=int(step))
        self.last_step = max(self.last_step, int(step))

    def artifact(self, path: Path, folder: str | None = None) -> None:
        self.run.save(str(path), base_path=str(Path(path).parent), policy="now")

    def tag(self, key: str, value: str) -> None:
        self.run.summary[key] = value

    def summary(self, values: Mapping[str, float], step: int) -> None:
        self.run.summary.update(dict(values))

    def close(self, status: str) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "FINISHED" else 1)
            self.run = None


def _api_key_from_secret(settings: WandbSettings) -> None:
    """On SageMaker, the key comes from a Secrets Manager secret, read with the job's role
    (secretsmanager:GetSecretValue): the value itself or JSON ``{"WANDB_API_KEY": ...}``.
    On Kubeflow the pod's environment already holds it (a secretKeyRef)."""
    if settings.mode != "online" or os.environ.get("WANDB_API_KEY") or \
            not settings.api_key_secret:
        return
    import boto3

    value = boto3.session.Session().client("secretsmanager").get_secret_value(
        SecretId=settings.api_key_secret)["SecretString"]
    try:
        value = json.loads(value).get("WANDB_API_KEY", value)
    except (json.JSONDecodeError, AttributeError):
        pass
    os.environ["WANDB_API_KEY"] = str(value).strip()


def make_sinks(settings, directory: Path | None = None) -> list:
    sinks: list = []
    if settings.mlflow is not None:
        sinks.append(MlflowSink(settings.mlflow))
    if settings.wandb is not None and settings.wandb.mode != "disabled":
        sinks.append(WandbSink(settings.wandb, directory))
    return sinks
