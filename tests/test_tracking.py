"""Experiment tracking (mtgrpo/tracking, docs/metrics.md) against real parts: a real MLflow
tracking server (SQLite store, local artifacts; conftest's ``mlflow_server``), W&B in offline
mode (its files read back), moto for S3 and CloudWatch, botocore's SageMaker model."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import tarfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from mtgrpo.recipes import read_recipe
from mtgrpo.tracking.identity import RunIdentity, job_identity
from mtgrpo.tracking.settings import (MlflowSettings, TrackingSettings, WandbSettings,
                                      check_tracking)
from mtgrpo.tracking.tracker import Tracker
from fakekube import fake  # noqa: F401 - the fake Kubernetes API server fixture
from tests.mlflow_kit import metric_table

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "qwen2-5-1-5b-g5.yaml"
ARN = "arn:aws:sagemaker:us-west-2:111122223333:mlflow-tracking-server/team-a"
SUMMARY_KEYS = {"train_seconds", "global_step"}


def _recipe(tracking, **job):
    from mtgrpo.recipes.loader import recipe_from_data

    data = read_recipe(RECIPE).data
    data["tracking"] = tracking
    data["job"].update(job)
    return recipe_from_data(data, source="r.yaml")


def _problems(tracking, **job):
    recipe = _recipe(tracking, **job)
    assert not recipe.problems, recipe.problems
    return [str(p) for p in check_tracking(recipe)]


# -- settings, rules, rendering -------------------------------------------------------------------

def test_valid_sections_pass():
    assert _problems({"mlflow": {"tracking_uri": ARN, "run_tags": {"team": "a"}}}) == []
    assert _problems({"mlflow": {"tracking_uri": "https://mlflow.example.com"},
                      "wandb": {"project": "p", "mode": "offline"}}) == []


@pytest.mark.parametrize("tracking, job, expected", [
    ({"mlflow": {"tracking_uri": "arn:aws:sagemaker:us-west-2:1111:mlflow-tracking-server/x"}},
     {}, "tracking.mlflow.tracking_uri: not a SageMaker MLflow tracking server ARN"),
    ({"mlflow": {"tracking_uri": ARN.replace("us-west-2", "eu-west-1")}}, {},
     "the tracking server is in eu-west-1, the job in us-west-2"),
    ({"mlflow": {"tracking_uri": "ftp://x"}}, {}, "not a tracking server URI"),
    ({"mlflow": {"tracking_uri": ARN, "run_tags": {"mlflow.user": "x"}}}, {},
     "tracking.mlflow.run_tags.mlflow.user: reserved"),
    ({"mlflow": {"tracking_uri": ARN}, "in_job": "always"}, {},
     "tracking.in_job: a network-isolated job cannot reach a tracking server"),
    ({"wandb": {"project": "p"}}, {"enable_network_isolation": False,
                                   "security_exceptions": {"enable_network_isolation": "x"}},
     "tracking.wandb.api_key_secret: online W&B logging from the job needs the W&B API key"),
    ({"wandb": {"project": "p", "api_key_secret": "0123456789abcdef0123456789abcdef01234567",
                "mode": "offline"}}, {}, "looks like a W&B API key (not shown)"),
])
def test_rules_name_the_key_and_what_is_allowed(tracking, job, expected):
    problems = _problems(tracking, **job)
    assert len(problems) == 1 and expected in problems[0], problems
    assert problems[0].startswith("r.yaml: tracking") and "(allowed: " in problems[0]
    assert "0123456789abcdef0123456789abcdef01234567" not in problems[0]


def test_schema_refuses_unknown_keys_and_values():
    recipe = _recipe({"mlflow": {"tracking_url": "x"}, "in_job": "sometimes"})
    shown = [str(p) for p in recipe.problems]
    assert any("tracking.mlflow.tracking_url: unknown key" in p and "tracking_uri" in p
               for p in shown), shown
    assert any("tracking.in_job: invalid value 'sometimes'" in p for p in shown), shown


def test_rendered_environment_round_trips_and_isolated_jobs_log_from_outside():
    from mtgrpo.render import build_resources, load_settings

    tracking = {"mlflow": {"tracking_uri": ARN, "experiment": "e", "run_tags": {"team": "a"}},
                "wandb": {"project": "p", "mode": "offline"}}
    recipe = _recipe(tracking)
    (job,) = build_resources(recipe, load_settings(REPO))
    env = job.body["spec"]["environment"]
    settings = TrackingSettings.from_environment(env)
    assert settings.mlflow == MlflowSettings(ARN, "e", {"team": "a"})
    assert settings.wandb == WandbSettings("p", None, "offline", None)
    assert settings.in_job is False  # network isolation (the default): `mtgrpo track` writes
    assert settings.recipe == recipe.name and settings.image == recipe.job["image_uri"]
    assert env["MLFLOW_TRACKING_URI"] == ARN
    open_job = _recipe(tracking, enable_network_isolation=False,
                       security_exceptions={"enable_network_isolation": "tracking"})
    (job2,) = build_resources(open_job, load_settings(REPO))
    assert TrackingSettings.from_environment(job2.body["spec"]["environment"]).in_job is True
    assert job2.name != job.name
    plain = read_recipe(RECIPE)
    (job3,) = build_resources(plain, load_settings(REPO))
    assert "environment" not in job3.body["spec"] or \
        "MTGRPO_TRACKING" not in job3.body["spec"]["environment"]


def test_kubeflow_pods_get_the_wandb_key_from_a_secret_by_name():
    from mtgrpo.recipes.loader import recipe_from_data
    from mtgrpo.render import build_resources, load_settings

    data = read_recipe(REPO / "recipes" / "qwen3-1-7b-kubeflow.yaml").data
    data["tracking"] = {"wandb": {"project": "p", "api_key_secret": "wandb-key"}}
    recipe = recipe_from_data(data, source="kf.yaml")
    assert not recipe.problems and check_tracking(recipe) == []
    text = "\n".join(r.text for r in build_resources(recipe, load_settings(REPO)))
    assert "secretKeyRef" in text and "name: wandb-key" in text and "WANDB_API_KEY" in text
    assert "MTGRPO_WANDB_KEY_FROM" not in text


def test_job_identity_nests_trials_under_their_tuning_job():
    trial = job_identity({"TRAINING_JOB_NAME": "sweep-abc-003-1a2b3c4d"},
                         {"_tuning_objective_metric": "eval_reward"})
    assert trial == RunIdentity("sweep-abc-003-1a2b3c4d", "training", "sweep-abc")
    plain = job_identity({"TRAINING_JOB_NAME": "sweep-abc-003-1a2b3c4d"}, {})
    assert plain.parent is None
    assert job_identity({}, default_name="out").kind == "local"


# -- the tracker: never blocks, retries, catches up -----------------------------------------------

class _Sink:
    name, where = "fake", "nowhere"

    def __init__(self, fail_first=0, delay=0.0, last=0):
        self.fail_first, self.delay, self.last = fail_first, delay, last
        self.logged: list[int] = []
        self.closed = None
        self.calls = 0

    def open(self, identity, params, tags):
        return self.last

    def log(self, step, values, timestamp_ms=None):
        self.calls += 1
        if self.calls <= self.fail_first:
            raise ConnectionError("refused")
        time.sleep(self.delay)
        self.logged.append(step)

    def artifact(self, path, folder=None):
        pass

    def tag(self, key, value):
        pass

    def summary(self, values, step):
        pass

    def close(self, status):
        self.closed = status


def test_a_failing_sink_is_retried_later_and_catches_up_in_order():
    warnings = []
    sink = _Sink(fail_first=4)
    tracker = Tracker([sink], RunIdentity("j"), params={}, retries=2, retry_wait_s=0.01,
                      cooldown_s=0.2, warn=warnings.append).start()
    for step in range(1, 6):
        tracker.log_step({"step": step, "loss": 1.0})
    assert tracker.close(timeout_s=30)
    assert sink.logged == [1, 2, 3, 4, 5] and sink.closed == "FINISHED"
    assert any("fake at nowhere: could not write step (ConnectionError: refused); training "
               "goes on" in w for w in warnings), warnings
    assert any("answers again" in w for w in warnings)


def test_log_step_never_waits_for_a_slow_sink_and_counts_what_it_drops():
    warnings = []
    sink = _Sink(delay=0.5)
    tracker = Tracker([sink], RunIdentity("j"), params={}, queue_size=3,
                      warn=warnings.append).start()
    started = time.monotonic()
    for step in range(1, 51):
        tracker.log_step({"step": step, "loss": 1.0})
    assert time.monotonic() - started < 0.4  # fifty puts, while the sink takes 0.5 s a step
    assert not tracker.close(timeout_s=0.1)
    assert any("dropping records; training goes on" in w for w in warnings)
    assert any("not written" in w and "mtgrpo track j" in w for w in warnings)


def test_resume_logs_only_steps_after_the_run_and_the_checkpoint():
    sink = _Sink(last=3)
    tracker = Tracker([sink], RunIdentity("j"), params={}).start(resume_step=2)
    for step in (3, 4, 5):  # step 3: held by the run already
        tracker.log_step({"step": step, "loss": 1.0})
    tracker.truncate_to(5)  # a restart from checkpoint 5 would repeat nothing more
    tracker.log_step({"step": 5, "loss": 2.0})
    tracker.log_step({"step": 6, "loss": 2.0})
    assert tracker.close(timeout_s=30)
    assert sink.logged == [4, 5, 6]


# -- a real local run against a real MLflow server ------------------------------------------------

def _tiny(tiny_model_dir, tmp, *, max_steps=3, save_steps=100):
    from mtgrpo.contract import TrainerConfig
    from mtgrpo.testing.synthetic import write_task
    from mtgrpo.trainer.paths import RunPaths

    task = tmp / "task"
    if not task.exists():
        write_task(task)
    cfg = TrainerConfig(model_name_or_path=str(tiny_model_dir), num_generations=2,
                        per_device_train_batch_size=2, gradient_accumulation_steps=1,
                        max_steps=max_steps, eval_steps=2, save_steps=save_steps,
                        learning_rate=1e-3, max_turns=2, max_tool_calls=1,
                        max_tokens_per_turn=32, max_completion_length=128, max_eval_samples=2,
                        search_max_tokens=32, generation_backend="transformers")
    out = tmp / "out"
    paths = RunPaths(str(tiny_model_dir), task / "train.jsonl", task / "eval.jsonl",
                     task / "corpus", out, out / "model", out / "checkpoints")
    return cfg, paths


def _train(cfg, paths, tiny_model_dir, **kwargs):
    from transformers import AutoTokenizer

    from mtgrpo.testing.synthetic import ScriptedSampler
    from mtgrpo.trainer.train import run

    sampler = ScriptedSampler(AutoTokenizer.from_pretrained(tiny_model_dir))
    with contextlib.redirect_stdout(io.StringIO()):
        return run(cfg, paths, sampler=sampler, **kwargs)


def _client(url):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url)


def _runs(url, experiment):
    client = _client(url)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def _records(path: Path) -> dict[int, dict]:
    from mtgrpo.trainer.metrics_log import read_metrics

    return {r["step"]: {k: float(v) for k, v in r.items() if k != "step"}
            for r in read_metrics(path)}


def _steps_of(table):
    return {step: {k: v for k, v in row.items()
                   if k not in SUMMARY_KEYS and not k.startswith("final_")}
            for step, row in table.items()}


@pytest.mark.slow
def test_a_local_run_writes_one_run_equal_to_metrics_jsonl(tiny_model_dir, tmp_path,
                                                            mlflow_server, capsys, monkeypatch):
    """`mtgrpo train` with a tracking: section: one run, its metrics metrics.jsonl's, step for
    step; parameters, the summary and the artifacts too."""
    from mtgrpo.cli import main
    from mtgrpo.testing.synthetic import write_task

    monkeypatch.setenv("MTGRPO_TRACKING_CLOSE_TIMEOUT_S", "300")
    write_task(tmp_path / "task")
    experiment = f"local-{uuid.uuid4().hex[:8]}"
    trainer = {"model_name_or_path": str(tiny_model_dir), "train_file": "task/train.jsonl",
               "eval_file": "task/eval.jsonl", "corpus_dir": "task/corpus",
               "generation_backend": "transformers", "num_generations": 2,
               "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
               "max_steps": 3, "eval_steps": 2, "max_eval_samples": 2, "max_turns": 2,
               "max_tool_calls": 1, "max_tokens_per_turn": 16, "max_completion_length": 128,
               "search_max_tokens": 32, "learning_rate": 1e-3, "algorithm": "grpo_or"}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"trainer": trainer, "tracking": {
        "mlflow": {"tracking_uri": mlflow_server, "experiment": experiment,
                   "run_tags": {"team": "a"}}}}))
    out = tmp_path / "out"
    assert main(["train", str(config), "--output", str(out)]) == 0
    assert "tracking:" not in capsys.readouterr().err  # no warning: the server answered
    (run,) = _runs(mlflow_server, experiment)
    client = _client(mlflow_server)
    table = metric_table(client, run.info.run_id)
    records = _records(out / "metrics.jsonl")
    assert sorted(records) == [1, 2, 3]
    assert _steps_of(table) == {s: pytest.approx(r) for s, r in records.items()}
    assert run.data.tags["mtgrpo.job_name"] == "out" and run.data.tags["team"] == "a"
    assert run.data.tags["mtgrpo.algorithm"] == "grpo_or"
    assert run.data.tags["mtgrpo.recipe"] == "c"  # a local config: its file name
    assert run.data.params["algorithm"] == "grpo_or" and run.data.params["recipe"] == \
        "c" and run.data.params["max_steps"] == "3"
    assert run.data.params["max_staleness"] == "0"  # resolved, not -1
    summary = json.loads((out / "eval_summary.json").read_text())
    assert table[3]["final_eval_reward"] == pytest.approx(summary["eval"]["eval_reward"])
    assert run.data.tags["mtgrpo.model_location"] == str(out / "model")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"eval_summary.json", "curves.png", "model_location.json"} <= artifacts
    assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_sigterm_and_resume_continue_the_same_run(tiny_model_dir, tmp_path, mlflow_server,
                                                  monkeypatch):
    """A job stopped by SIGTERM (checkpoint at step 2) and resumed: one run, steps 1..4 once
    each, equal to metrics.jsonl; the job's environment names the run."""
    from transformers import TrainerCallback

    from mtgrpo.sagemaker.callback import CheckpointCallback
    from mtgrpo.sagemaker.checkpoints import StopRequest, TrainingInterrupted, prepare_resume

    monkeypatch.setenv("MTGRPO_TRACKING_CLOSE_TIMEOUT_S", "300")
    monkeypatch.setenv("TRAINING_JOB_NAME", "resume-job-0123456789")
    experiment = f"resume-{uuid.uuid4().hex[:8]}"
    settings = TrackingSettings(mlflow=MlflowSettings(mlflow_server, experiment))
    cfg, paths = _tiny(tiny_model_dir, tmp_path, max_steps=4)
    metrics = paths.output_dir / "metrics.jsonl"

    class SigtermAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    stop = StopRequest()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        stop.install_handler()
        with pytest.raises(TrainingInterrupted):
            _train(cfg, paths, tiny_model_dir, tracking=settings, callbacks=[
                SigtermAt(), CheckpointCallback(stop, metrics_file=metrics, node_rank=0,
                                                num_nodes=1)])
    finally:
        signal.signal(signal.SIGTERM, previous)
    (first,) = _runs(mlflow_server, experiment)
    assert first.info.status == "KILLED"
    assert sorted(metric_table(_client(mlflow_server), first.info.run_id)) == [1, 2]
    # The job is started again (spot, a restart): the launcher restores metrics.jsonl.
    resumed_from = prepare_resume(paths.checkpoint_dir, metrics)
    assert resumed_from is not None and resumed_from.name == "checkpoint-2"
    _train(cfg, paths, tiny_model_dir, tracking=settings, callbacks=[
        CheckpointCallback(StopRequest(), metrics_file=metrics, node_rank=0, num_nodes=1)])
    (run,) = _runs(mlflow_server, experiment)
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags["mtgrpo.job_name"] == "resume-job-0123456789"
    table = metric_table(_client(mlflow_server), run.info.run_id)  # fails on a duplicate
    records = _records(metrics)
    assert sorted(records) == [1, 2, 3, 4]
    assert _steps_of(table) == {s: pytest.approx(r) for s, r in records.items()}


@pytest.mark.slow
def test_a_server_that_is_down_never_stops_training(tiny_model_dir, tmp_path, monkeypatch,
                                                    capsys):
    """Nothing listens at the tracking URI: training finishes with the same metrics as an
    untracked run, one warning line says so."""
    from tests.conftest import free_port

    monkeypatch.setenv("MTGRPO_TRACKING_CLOSE_TIMEOUT_S", "5")
    cfg, paths = _tiny(tiny_model_dir, tmp_path / "plain")
    plain = _train(cfg, paths, tiny_model_dir)
    cfg, down_paths = _tiny(tiny_model_dir, tmp_path / "down")
    settings = TrackingSettings(mlflow=MlflowSettings(f"http://127.0.0.1:{free_port()}", "x"))
    down = _train(cfg, down_paths, tiny_model_dir, tracking=settings)
    assert down["global_step"] == plain["global_step"] == 3
    timing = ("_seconds", "tokens_per_second")

    def values(path):
        return {s: {k: v for k, v in r.items() if not k.endswith(timing)}
                for s, r in _records(path).items()}

    expected = values(paths.output_dir / "metrics.jsonl")
    assert values(down_paths.output_dir / "metrics.jsonl") == {
        step: pytest.approx(row) for step, row in expected.items()}
    assert (down_paths.model_dir / "model.safetensors").is_file()
    err = capsys.readouterr().err
    assert "mtgrpo: tracking: mlflow at http://127.0.0.1:" in err and "training goes on" in err


# -- from outside: moto S3 and CloudWatch, botocore's SageMaker model ----------------------------

BUCKET = "amzn-s3-demo-bucket"


def _sagemaker_stub(jobs: dict, tuning: dict | None = None):
    """A real botocore SageMaker client whose answers (checked against the service model) are
    ``jobs``' DescribeTrainingJob responses, and a tuning job's listing when given."""
    import boto3
    from botocore.stub import ANY, Stubber

    client = boto3.client("sagemaker", region_name="us-west-2")
    stub = Stubber(client)
    return client, stub, ANY


def _described(name: str, env: dict, hyperparameters: dict, status="Completed"):
    import datetime as dt

    now = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    return {"TrainingJobName": name,
            "TrainingJobArn": f"arn:aws:sagemaker:us-west-2:111122223333:training-job/{name}",
            "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/out/{name}/output/"
                                                   "model.tar.gz"},
            "TrainingJobStatus": status, "SecondaryStatus": status,
            "HyperParameters": hyperparameters,
            "AlgorithmSpecification": {"TrainingImage": "111122223333.dkr.ecr.us-west-2."
                                                        "amazonaws.com/t@sha256:" + "0" * 64,
                                       "TrainingInputMode": "File"},
            "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/out"},
            "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1,
                               "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "CreationTime": now, "TrainingStartTime": now,
            "TrainingEndTime": now + dt.timedelta(minutes=30),
            "Environment": env}


def _put_output(s3, name: str, records: list[dict], summary: dict) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for member, data in (("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records)),
                             ("eval_summary.json", json.dumps(summary))):
            raw = data.encode()
            info = tarfile.TarInfo(member)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    s3.put_object(Bucket=BUCKET, Key=f"out/{name}/output/output.tar.gz",
                  Body=buffer.getvalue())


def _hyperparameters(algorithm="mt_grpo", **extra):
    from mtgrpo.contract import TrainerConfig

    hp = TrainerConfig(model_name_or_path="m", algorithm=algorithm).to_hyperparameters()
    return {**hp, **extra}


def _track(names, sagemaker, s3, cloudwatch, settings):
    from mtgrpo.tracking.outside import track
    from mtgrpo.tracking.sinks import make_sinks

    lines = []
    done = track(names, sagemaker=sagemaker, s3=s3, cloudwatch=cloudwatch,
                 settings_for=lambda from_job, name: from_job or settings,
                 make_sinks=make_sinks, say=lines.append)
    return done, lines


def _expect_training(stub, any_, described):
    from botocore.exceptions import ClientError  # noqa: F401

    stub.add_client_error("describe_hyper_parameter_tuning_job", "ResourceNotFound",
                          expected_params={"HyperParameterTuningJobName":
                                           described["TrainingJobName"]})
    stub.add_response("describe_training_job", described,
                      {"TrainingJobName": described["TrainingJobName"]})


@pytest.mark.slow
def test_track_writes_the_in_job_run_from_outside_and_twice_adds_nothing(mlflow_server,
                                                                          tmp_path):
    """An isolated job's output metrics.jsonl (moto S3) and parameters (DescribeTrainingJob):
    the same run the job writes itself; a second `mtgrpo track` writes no point twice."""
    import boto3
    from moto import mock_aws

    experiment = f"outside-{uuid.uuid4().hex[:8]}"
    name = "isolated-job-0123456789"
    settings = TrackingSettings(mlflow=MlflowSettings(mlflow_server, experiment),
                                recipe="qwen", in_job=False)
    env = settings.to_environment()
    records = [{"step": s, "reward": 0.1 * s, "loss": -0.5 * s, "kl": 0.0} for s in (1, 2, 3)]
    records[1]["eval_reward"] = 0.25
    summary = {"global_step": 3, "train_seconds": 12.5, "eval": {"eval_reward": 0.3}}
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-west-2")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={
            "LocationConstraint": "us-west-2"})
        _put_output(s3, name, records, summary)
        cloudwatch = boto3.client("cloudwatch", region_name="us-west-2")
        sagemaker, stub, any_ = _sagemaker_stub({})
        described = _described(name, env, _hyperparameters())
        with stub:
            _expect_training(stub, any_, described)
            _expect_training(stub, any_, described)
            first, lines = _track([name], sagemaker, s3, cloudwatch, settings)
            second, _ = _track([name], sagemaker, s3, cloudwatch, settings)
            stub.assert_no_pending_responses()
    assert first[0].steps == 3 and first[0].metrics_from == "output metrics.jsonl"
    assert second[0].points == 0 and second[0].steps == 0
    assert "3 step(s) in all" in lines[0]
    (run,) = _runs(mlflow_server, experiment)
    client = _client(mlflow_server)
    table = metric_table(client, run.info.run_id)
    assert _steps_of(table) == {r["step"]: pytest.approx(
        {k: float(v) for k, v in r.items() if k != "step"}) for r in records}
    assert table[3]["final_eval_reward"] == pytest.approx(0.3)
    assert run.data.params["job_name"] == name and run.data.params["recipe"] == "qwen"
    assert run.data.params["max_staleness"] in ("0", "1")  # resolved as the trainer does
    assert run.data.params["image"].endswith("0" * 64)
    assert run.data.tags["mtgrpo.model_location"].endswith(f"{name}/output/model.tar.gz")
    assert run.info.status == "FINISHED"
    assert {"eval_summary.json", "curves.png", "model_location.json"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.slow
def test_track_reads_a_running_job_from_cloudwatch(mlflow_server):
    """No output yet: the CloudWatch series SageMaker publishes (moto), one record per step."""
    import datetime as dt

    import boto3
    from moto import mock_aws

    from mtgrpo.operate.metric_series import NAMESPACE, host_value

    experiment = f"cw-{uuid.uuid4().hex[:8]}"
    name = "running-job-0123456789"
    settings = TrackingSettings(mlflow=MlflowSettings(mlflow_server, experiment))
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-west-2")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={
            "LocationConstraint": "us-west-2"})
        cloudwatch = boto3.client("cloudwatch", region_name="us-west-2")
        start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=20)
        for step in (1, 2):
            stamp = start + dt.timedelta(minutes=step)
            cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=[
                {"MetricName": metric, "Value": value, "Timestamp": stamp,
                 "Dimensions": [{"Name": "Host", "Value": host_value(name)}]}
                for metric, value in (("step", step), ("reward", 0.5 * step))])
        described = _described(name, settings.to_environment(), _hyperparameters(),
                               status="InProgress")
        described["TrainingStartTime"] = start
        described.pop("TrainingEndTime")
        sagemaker, stub, any_ = _sagemaker_stub({})
        with stub:
            _expect_training(stub, any_, described)
            stub.add_response("describe_training_job", described, {"TrainingJobName": name})
            done, _ = _track([name], sagemaker, s3, cloudwatch, settings)
    assert done[0].metrics_from == "CloudWatch" and done[0].steps == 2
    (run,) = _runs(mlflow_server, experiment)
    table = metric_table(_client(mlflow_server), run.info.run_id)
    assert table == {1: {"reward": 0.5}, 2: {"reward": 1.0}}
    assert run.info.status == "RUNNING"


@pytest.mark.slow
def test_a_tuning_job_is_one_parent_run_with_a_nested_run_per_trial(mlflow_server):
    import datetime as dt

    import boto3
    from moto import mock_aws

    experiment = f"tune-{uuid.uuid4().hex[:8]}"
    tuning_name = "sweep-0123456789"
    trials = [f"{tuning_name}-00{i}-0000000{i}" for i in (1, 2, 3)]
    settings = TrackingSettings(mlflow=MlflowSettings(mlflow_server, experiment))
    now = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    tuning = {
        "HyperParameterTuningJobName": tuning_name,
        "HyperParameterTuningJobArn": "arn:aws:sagemaker:us-west-2:111122223333:"
                                      f"hyper-parameter-tuning-job/{tuning_name}",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random", "ResourceLimits": {"MaxNumberOfTrainingJobs": 3,
                                                     "MaxParallelTrainingJobs": 3}},
        "TrainingJobDefinition": {
            "StaticHyperParameters": {"algorithm": "mt_grpo"},
            "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File"},
            "RoleArn": "arn:aws:iam::111122223333:role/r",
            "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/out"},
            "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1,
                               "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600}},
        "HyperParameterTuningJobStatus": "Completed", "CreationTime": now,
        "TrainingJobStatusCounters": {}, "ObjectiveStatusCounters": {}}
    summaries = [{"TrainingJobName": t, "TrainingJobArn": f"arn:aws:sagemaker:us-west-2:"
                  f"111122223333:training-job/{t}", "CreationTime": now,
                  "TrainingJobStatus": "Completed", "TunedHyperParameters": {
                      "learning_rate": str(10 ** -i)}} for i, t in enumerate(trials, 1)]
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-west-2")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={
            "LocationConstraint": "us-west-2"})
        for i, trial in enumerate(trials, 1):
            _put_output(s3, trial, [{"step": 1, "reward": 0.1 * i}], {"eval": {}})
        cloudwatch = boto3.client("cloudwatch", region_name="us-west-2")
        sagemaker, stub, any_ = _sagemaker_stub({})
        with stub:
            stub.add_response("describe_hyper_parameter_tuning_job", tuning,
                              {"HyperParameterTuningJobName": tuning_name})
            stub.add_response("list_training_jobs_for_hyper_parameter_tuning_job",
                              {"TrainingJobSummaries": summaries},
                              {"HyperParameterTuningJobName": tuning_name})
            for i, trial in enumerate(trials, 1):
                stub.add_response("describe_training_job", _described(
                    trial, {}, _hyperparameters(learning_rate=str(10 ** -i),
                                                _tuning_objective_metric="eval_reward")),
                    {"TrainingJobName": trial})
            done, lines = _track([tuning_name], sagemaker, s3, cloudwatch, settings)
    assert [d.name for d in done] == trials
    runs = _runs(mlflow_server, experiment)
    assert len(runs) == 4
    (parent,) = [r for r in runs if r.data.tags["mtgrpo.kind"] == "tuning"]
    assert parent.data.tags["mtgrpo.job_name"] == tuning_name
    children = [r for r in runs if r is not parent]
    assert sorted(r.data.tags["mtgrpo.job_name"] for r in children) == trials
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert lines[0] == f"{tuning_name}: parent run of 3 trial(s)"


@pytest.mark.slow
def test_trials_starting_together_share_one_parent_run(mlflow_server):
    """Trials of one tuning job open their runs at once: one parent, each trial nested."""
    from mtgrpo.tracking.sinks import MlflowSink

    experiment = f"race-{uuid.uuid4().hex[:8]}"
    sinks = [MlflowSink(MlflowSettings(mlflow_server, experiment)) for _ in range(3)]
    barrier = threading.Barrier(3)

    def open_trial(i):
        barrier.wait()
        sinks[i].open(RunIdentity(f"sweep-x-00{i}-0000000{i}", "training", "sweep-x"), {}, {})

    threads = [threading.Thread(target=open_trial, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    parents = {s.parent_id for s in sinks}
    assert len(parents) == 1
    runs = _runs(mlflow_server, experiment)
    assert len([r for r in runs if r.data.tags.get("mtgrpo.kind") == "tuning"]) == 1


# -- SageMaker managed MLflow (the plugin, no network) and W&B (offline) --------------------------

def test_an_arn_goes_to_the_sagemaker_mlflow_plugin(monkeypatch):
    """A tracking server ARN is resolved by sagemaker-mlflow's `arn` tracking store: the
    plugin is asked for the store with the ARN (and nothing is sent anywhere)."""
    from mlflow.tracking._tracking_service import utils

    from mtgrpo.tracking.sinks import MlflowSink

    registry = utils._tracking_store_registry
    registry.register_entrypoints()
    builder = registry._registry.get("arn")
    assert builder is not None and "sagemaker_mlflow" in builder.__module__
    asked = []

    class Refused(Exception):
        pass

    def recording(store_uri=None, artifact_uri=None):
        asked.append(store_uri)
        raise Refused("no network in tests")

    monkeypatch.setitem(registry._registry, "arn", recording)
    sink = MlflowSink(MlflowSettings(ARN))
    with pytest.raises(Refused):
        sink.open(RunIdentity("j"), {}, {})
    assert asked == [ARN]


@pytest.mark.slow
def test_wandb_offline_run_holds_the_metrics(tiny_model_dir, tmp_path, monkeypatch):
    """W&B in offline mode: the run's files, read back, hold every metrics.jsonl step and the
    parameters; nothing goes over the network."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MTGRPO_TRACKING_CLOSE_TIMEOUT_S", "300")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg, paths = _tiny(tiny_model_dir, tmp_path)
    settings = TrackingSettings(wandb=WandbSettings("mtgrpo-test", mode="offline"))
    _train(cfg, paths, tiny_model_dir, tracking=settings,
           identity=RunIdentity("wandb-job-0123456789"))
    history, config = _read_wandb(paths.output_dir / "wandb")
    records = _records(paths.output_dir / "metrics.jsonl")
    assert sorted(history) == sorted(records)
    for step, row in records.items():
        assert {k: history[step][k] for k in row} == pytest.approx(row)
    assert config["algorithm"] == "mt_grpo" and config["job_name"] == "wandb-job-0123456789"


def _wandb_records(path: Path):
    """The protobuf records of a W&B run file: a 7-byte header (``:W&B``, magic, version),
    then LevelDB log records (32 KiB blocks; 7-byte headers: CRC, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header: zeros
            pos += block - pos % block
            continue
        length = int.from_bytes(data[pos + 4:pos + 6], "little")
        kind = data[pos + 6]
        if kind == 0 and length == 0:
            break
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def _read_wandb(directory: Path):
    """history rows by step and the config of the one offline run under ``directory``."""
    (run_file,) = directory.rglob("run-*.wandb")
    assert "wandb-job-0123456789" in run_file.name
    history: dict[int, dict] = {}
    config: dict = {}
    for record in _wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                   for item in record.history.item}
            step = int(row.pop("_step", record.history.step.num))
            history[step] = {k: v for k, v in row.items() if not k.startswith("_")}
        elif kind in ("run", "config"):
            updates = record.run.config.update if kind == "run" else record.config.update
            for item in updates:
                value = json.loads(item.value_json)
                config[item.key] = value.get("value", value) if isinstance(value, dict) \
                    else value
    return history, config


def test_plot_labels_each_run_with_its_algorithm(tmp_path):
    """Side by side: `mtgrpo plot A B` names MT-GRPO and the GRPO baseline in the legend."""
    from mtgrpo.commands.plot import load_run

    labels = []
    for name, algorithm in (("a", "mt_grpo"), ("b", "grpo_or")):
        run = tmp_path / name
        run.mkdir()
        (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward": 0.5}) + "\n")
        (run / "eval_summary.json").write_text(json.dumps({"algorithm": algorithm}))
        labels.append(load_run(str(run), "", "algo-1")[0])
        labels.append(load_run(str(run / "metrics.jsonl"), "", "algo-1")[0])
    assert labels == ["a (mt_grpo)", "a (mt_grpo)", "b (grpo_or)", "b (grpo_or)"]


@pytest.mark.slow
def test_mtgrpo_track_command_on_a_moto_job(mlflow_server, capsys):
    """The command end to end on moto's SageMaker and S3: flags say where the run goes; a
    second call writes nothing; without any tracking settings, one error line."""
    import boto3
    from moto import mock_aws

    from mtgrpo.cli import main

    experiment = f"cli-{uuid.uuid4().hex[:8]}"
    name = "cli-job-0123456789"
    records = [{"step": s, "reward": 0.2 * s, "loss": 1.0 / s} for s in (1, 2)]
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-west-2")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={
            "LocationConstraint": "us-west-2"})
        _put_output(s3, name, records, {"eval": {"eval_reward": 0.4}, "global_step": 2})
        boto3.client("sagemaker", region_name="us-west-2").create_training_job(
            TrainingJobName=name, RoleArn="arn:aws:iam::111122223333:role/r",
            AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
            OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/out"},
            ResourceConfig={"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1,
                            "VolumeSizeInGB": 30},
            StoppingCondition={"MaxRuntimeInSeconds": 3600},
            HyperParameters=_hyperparameters(algorithm="grpo_or"))
        flags = ["--mlflow-uri", mlflow_server, "--experiment", experiment,
                 "--region", "us-west-2"]
        assert main(["track", name, *flags]) == 0
        assert main(["track", name, *flags]) == 0
        out = capsys.readouterr().out
        assert f"{name}: 4 new point(s) over 2 step(s) from output metrics.jsonl" in out
        assert f"{name}: 0 new point(s) over 0 step(s)" in out
        assert main(["track", name, "--region", "us-west-2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no tracking settings" in err[0] and "--mlflow-uri" in err[0]
    (run,) = _runs(mlflow_server, experiment)
    table = metric_table(_client(mlflow_server), run.info.run_id)
    assert _steps_of(table) == {1: pytest.approx({"reward": 0.2, "loss": 1.0}),
                                2: pytest.approx({"reward": 0.4, "loss": 0.5})}
    assert run.data.tags["mtgrpo.algorithm"] == "grpo_or"


@pytest.mark.slow
def test_wait_track_writes_the_run_of_the_job_it_waited_for(fake, mlflow_server, capsys):
    """`mtgrpo wait JOB --track` against the fake Kubernetes API server (the job Completed)
    and moto: the SageMaker job's run, written once the wait is over."""
    import boto3
    from fakekube import training_job
    from moto import mock_aws

    from mtgrpo.cli import main

    experiment = f"wait-{uuid.uuid4().hex[:8]}"
    name = "Wait-Track-0123456789"
    with mock_aws():
        fake.put(training_job(name, status={"trainingJobStatus": "Completed",
                                            "secondaryStatus": "Completed"}))
        s3 = boto3.client("s3", region_name="us-west-2")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={
            "LocationConstraint": "us-west-2"})
        _put_output(s3, name, [{"step": 1, "reward": 0.5}], {"eval": {}})
        boto3.client("sagemaker", region_name="us-west-2").create_training_job(
            TrainingJobName=name, RoleArn="arn:aws:iam::111122223333:role/r",
            AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
            OutputDataConfig={"S3OutputPath": f"s3://{BUCKET}/out"},
            ResourceConfig={"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1,
                            "VolumeSizeInGB": 30},
            StoppingCondition={"MaxRuntimeInSeconds": 3600}, HyperParameters=_hyperparameters())
        assert main(["wait", name.lower(), "--kubeconfig", str(fake.kubeconfig), "--timeout",
                     "30", "--track", "--mlflow-uri", mlflow_server,
                     "--experiment", experiment]) == 0
    out = capsys.readouterr().out
    assert f"{name}: 1 new point(s) over 1 step(s) from output metrics.jsonl" in out
    (run,) = _runs(mlflow_server, experiment)
    assert run.data.tags["mtgrpo.job_name"] == name
    assert metric_table(_client(mlflow_server), run.info.run_id) == {1: {"reward": 0.5}}
