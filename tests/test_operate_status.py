"""`mtgrpo status` against the fake Kubernetes API server (and moto for trial counts)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from fakekube import best_trial, fake, terminal_condition, training_job, tuning_job  # noqa: F401
from mtgrpo.cli import main
from mtgrpo.recipes import load_recipe
from mtgrpo.render import build_resources, load_settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def jobs(fake):
    fake.put(training_job("demo-a1", status={
        "trainingJobStatus": "InProgress", "secondaryStatus": "Training",
        "creationTime": "2026-01-01T00:00:00Z"}))
    fake.put(training_job("demo-b2", status={
        "trainingJobStatus": "Failed", "secondaryStatus": "Failed",
        "failureReason": "AlgorithmError: ExecuteUserScriptError: exit code 1",
        "creationTime": "2026-01-01T00:00:00Z", "lastModifiedTime": "2026-01-01T01:02:03Z"}))
    fake.put(training_job("other-c3", recipe="other", count=1, instance_type="ml.g5.2xlarge",
                          status={"conditions": terminal_condition("InvalidParameterValue")}))
    fake.put(tuning_job("Tune-D4", status={
        "hyperParameterTuningJobStatus": "InProgress",
        **best_trial("Tune-D4-002-aaaa", {"learning_rate": "2e-06",
                                          "per_device_train_batch_size": "2"}, 0.4375)}))
    return fake


def status_json(fake, *args) -> list[dict]:
    return json.loads(status_out(fake, "--output", "json", *args))


def status_out(fake, *args) -> str:
    import io
    import contextlib
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["status", "--kubeconfig", str(fake.kubeconfig), *args]) == 0
    return buf.getvalue()


def test_json_lists_every_job_with_its_state(jobs):
    records = {r["name"]: r for r in status_json(jobs, "--no-aws")}
    assert sorted(records) == ["demo-a1", "demo-b2", "other-c3", "tune-d4"]
    a, b, c, d = (records[n] for n in sorted(records))
    assert (a["status"], a["secondaryStatus"], a["recipe"]) == ("InProgress", "Training", "demo")
    assert (a["instanceType"], a["instanceCount"]) == ("ml.p4d.24xlarge", 2)
    assert b["failureReason"] == "AlgorithmError: ExecuteUserScriptError: exit code 1"
    assert b["elapsedSeconds"] == 3723  # creation to last change, for a finished job
    assert a["elapsedSeconds"] > 3723  # still running: until now
    assert c["terminal"] == "InvalidParameterValue" and c["status"] == ""
    assert d["kind"] == "HyperParameterTuningJob" and d["jobName"] == "Tune-D4"
    assert d["best"] == {"name": "Tune-D4-002-aaaa", "status": "Completed",
                         "hyperparameters": {"learning_rate": "2e-06",
                                             "per_device_train_batch_size": "2"},
                         "objective": "eval_reward", "value": 0.4375}
    assert (d["trials"], d["trialsUnknown"]) == (None, "not asked: --no-aws")
    assert d["modelArtifact"] == ("s3://amzn-s3-demo-bucket/tuning/Tune-D4-002-aaaa/"
                                  "output/model.tar.gz")


def test_table(jobs):
    lines = status_out(jobs, "--no-aws").splitlines()
    assert lines[0].split() == ["JOB", "KIND", "RECIPE", "STATUS", "SECONDARY", "ELAPSED",
                                "INSTANCES", "REASON"]
    rows = {line.split()[0]: line for line in lines[1:] if not line.startswith(" ")}
    assert "ml.p4d.24xlarge x 2" in rows["demo-a1"]
    assert "AlgorithmError: ExecuteUserScriptError: exit code 1" in rows["demo-b2"]
    assert "1h02m" in rows["demo-b2"]
    assert "Terminal: InvalidParameterValue" in rows["other-c3"]
    tuning = lines[lines.index(rows["tune-d4"]) + 1:]
    assert tuning[0].strip() == "trials: unknown (not asked: --no-aws)"
    assert tuning[1].strip() == ("best: Tune-D4-002-aaaa eval_reward=0.4375  "
                                 "(learning_rate=2e-06 per_device_train_batch_size=2)")


def test_trial_counts_come_from_sagemaker(jobs):
    with mock_aws():
        sm = boto3.client("sagemaker", region_name="us-west-2")
        sm.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName="Tune-D4",
            HyperParameterTuningJobConfig={
                "Strategy": "Bayesian",
                "ResourceLimits": {"MaxNumberOfTrainingJobs": 10, "MaxParallelTrainingJobs": 2}},
            TrainingJobDefinition={
                "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File"},
                "RoleArn": "arn:aws:iam::111122223333:role/sm-role-name",
                "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
                "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1,
                                   "VolumeSizeInGB": 10},
                "StoppingCondition": {"MaxRuntimeInSeconds": 60}})
        counters = sm.describe_hyper_parameter_tuning_job(
            HyperParameterTuningJobName="Tune-D4")["TrainingJobStatusCounters"]
        record = status_json(jobs, "tune-d4")[0]
    assert record["trials"] == {
        "completed": counters["Completed"], "running": counters["InProgress"],
        "failed": counters["RetryableError"] + counters["NonRetryableError"],
        "stopped": counters["Stopped"]}


def test_selectors_by_job_recipe_and_recipe_file(jobs):
    assert [r["name"] for r in status_json(jobs, "--no-aws", "DEMO-A1")] == ["demo-a1"]
    assert [r["name"] for r in status_json(jobs, "--no-aws", "demo")] == ["demo-a1", "demo-b2"]
    assert [r["name"] for r in status_json(jobs, "--no-aws", "other", "demo-a1")] == \
        ["demo-a1", "other-c3"]


def test_recipe_file_shows_its_jobs_and_the_current_one_not_yet_applied(jobs):
    recipe = REPO / "recipes" / "qwen2-5-1-5b-tune.yaml"  # its name labels its jobs
    [current] = [r.body for r in build_resources(load_recipe(recipe), load_settings(REPO))]
    jobs.put(tuning_job("q-tune-1", recipe="qwen2-5-1-5b-tune",
                        status={"hyperParameterTuningJobStatus": "Completed"}))
    records = status_json(jobs, "--no-aws", str(recipe))
    assert [(r["name"], r["status"]) for r in records] == [
        ("q-tune-1", "Completed"), (current["metadata"]["name"], "NotApplied")]
    assert "NotApplied" in status_out(jobs, str(recipe))  # no SageMaker call for it either
    current["metadata"]["namespace"] = "ml"  # applied now (to the namespace status reads)
    jobs.put(current)
    assert [(r["name"], r["status"]) for r in status_json(jobs, "--no-aws", str(recipe))] == [
        ("q-tune-1", "Completed"), (current["metadata"]["name"], "")]  # not synced yet


def test_unknown_selector_is_one_line(jobs, capsys):
    assert main(["status", "dem", "--kubeconfig", str(jobs.kubeconfig)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "dem: no job or recipe of that name; did you mean 'demo'?" in err


def test_empty_namespace(fake, capsys):
    assert main(["status", "--kubeconfig", str(fake.kubeconfig), "-n", "empty"]) == 0
    assert capsys.readouterr().err.strip() == "no jobs in namespace empty"


def test_api_without_the_crds_is_one_line(fake, capsys, monkeypatch):
    from fakekube import KINDS
    monkeypatch.delitem(KINDS, "trainingjobs")  # as if the ACK CRDs were not installed
    assert main(["status", "--kubeconfig", str(fake.kubeconfig)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "the API has no sagemaker.services.k8s.aws/v1alpha1 trainingjobs" in err


def test_status_without_aws_credentials_still_works(jobs, monkeypatch, tmp_path):
    """Trial counts need SageMaker; everything else comes from the cluster."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    record = status_json(jobs, "tune-d4")[0]
    assert record["trials"] is None
    assert record["trialsUnknown"] == "Unable to locate credentials"
    assert record["best"]["name"] == "Tune-D4-002-aaaa"
