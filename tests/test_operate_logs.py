"""`mtgrpo logs` against moto's CloudWatch Logs, the job found through the fake API server."""

from __future__ import annotations

import threading
import time

import boto3
import pytest
from moto import mock_aws

from fakekube import best_trial, fake, training_job, tuning_job  # noqa: F401
from mtgrpo.cli import main
from mtgrpo.operate.logs import LOG_GROUP, LogReader, host_of

JOB = "demo-train-0123456789"
T0 = int(time.time() * 1000) - 60_000  # CloudWatch refuses events older than 14 days


@pytest.fixture
def cloudwatch():
    with mock_aws():
        client = boto3.client("logs", region_name="us-west-2")
        client.create_log_group(logGroupName=LOG_GROUP)
        yield client


def put(client, stream: str, events: list[tuple[int, str]]) -> None:
    try:
        client.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    except client.exceptions.ResourceAlreadyExistsException:
        pass
    client.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream,
                          logEvents=[{"timestamp": T0 + t, "message": m} for t, m in events])


def logs(fake, *args) -> int:
    return main(["logs", *args, "--kubeconfig", str(fake.kubeconfig)])


def test_hosts_are_interleaved_by_time(fake, cloudwatch, capsys):
    fake.put(training_job(JOB, status={"trainingJobStatus": "Completed"}))
    put(cloudwatch, f"{JOB}/algo-1-1700000000", [(1000, "a1 start"), (3000, "a1 step 1"),
                                                 (5000, "a1 done")])
    put(cloudwatch, f"{JOB}/algo-2-1700000001", [(2000, "a2 start"), (4000, "a2 step 1")])
    put(cloudwatch, f"{JOB}-other/algo-1-1700000000", [(1500, "another job: never shown")])
    assert logs(fake, JOB) == 0
    assert capsys.readouterr().out.splitlines() == [
        "[algo-1] a1 start", "[algo-2] a2 start", "[algo-1] a1 step 1", "[algo-2] a2 step 1",
        "[algo-1] a1 done"]


def test_one_host_has_no_prefix(fake, cloudwatch, capsys):
    fake.put(training_job(JOB, status={"trainingJobStatus": "Completed"}))
    put(cloudwatch, f"{JOB}/algo-1-1700000000", [(1000, "only\n"), (2000, "host")])
    assert logs(fake, JOB) == 0
    assert capsys.readouterr().out == "only\nhost\n"


def test_follow_prints_until_the_job_ends(fake, cloudwatch, capsys):
    fake.put(training_job(JOB, status={"trainingJobStatus": "InProgress"}))
    put(cloudwatch, f"{JOB}/algo-1-1700000000", [(1000, "line 1")])

    def job_runs():
        time.sleep(0.3)
        put(cloudwatch, f"{JOB}/algo-1-1700000000", [(2000, "line 2")])
        time.sleep(0.3)
        put(cloudwatch, f"{JOB}/algo-1-1700000000", [(3000, "last line")])
        fake.set_status("TrainingJob", JOB, {"trainingJobStatus": "Completed"})
    thread = threading.Thread(target=job_runs, daemon=True)
    thread.start()
    assert logs(fake, JOB, "--follow", "--poll", "0.05") == 0
    thread.join()
    assert capsys.readouterr().out.splitlines() == ["line 1", "line 2", "last line"]


def test_reader_reads_only_new_events(cloudwatch):
    put(cloudwatch, f"{JOB}/algo-1-1700000000", [(1000, "one")])
    reader = LogReader(cloudwatch, JOB)
    assert [m for _, _, m in reader.new_events()] == ["one"]
    assert reader.new_events() == []
    put(cloudwatch, f"{JOB}/algo-1-1700000000", [(2000, "two")])
    assert [m for _, _, m in reader.new_events()] == ["two"]


@pytest.mark.slow
def test_tuning_job_shows_the_best_or_a_named_trial(fake, cloudwatch, capsys):
    fake.put(tuning_job("tune-x", status={"hyperParameterTuningJobStatus": "Completed",
                                          **best_trial("tune-x-002-bbbb", {"learning_rate": "1e-6"})}))
    put(cloudwatch, "tune-x-002-bbbb/algo-1-1700000000", [(1000, "best trial")])
    put(cloudwatch, "tune-x-001-aaaa/algo-1-1700000000", [(1000, "first trial")])
    assert logs(fake, "tune-x") == 0
    assert capsys.readouterr().out == "best trial\n"
    assert logs(fake, "tune-x", "--trial", "tune-x-001-aaaa") == 0
    assert capsys.readouterr().out == "first trial\n"


def test_host_names():
    assert host_of("job/algo-10-1700000000") == "algo-10"
    assert host_of("job/algo-1") == "algo-1"


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_no_streams_is_one_line(fake, cloudwatch, capsys):
    fake.put(training_job(JOB, status={"trainingJobStatus": "InProgress"}))
    assert logs(fake, JOB) == 1
    assert "no log streams for this job" in one_line(capsys)


def test_tuning_job_without_a_best_trial(fake, capsys):
    fake.put(tuning_job("tune-y", status={"hyperParameterTuningJobStatus": "InProgress"}))
    assert logs(fake, "tune-y") == 1
    assert "no best trial yet" in one_line(capsys)


def test_no_credentials_is_one_line(fake, capsys, monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    fake.put(training_job(JOB, status={"trainingJobStatus": "Completed"}))
    assert logs(fake, JOB) == 1
    assert "AWS credentials" in one_line(capsys)


@pytest.mark.slow
def test_follow_a_trial_ends_when_sagemaker_says_it_finished(fake, cloudwatch, capsys):
    """A trial is no Kubernetes resource: its state comes from DescribeTrainingJob."""
    trial = "tune-v-003-cccc"
    boto3.client("sagemaker", region_name="us-west-2").create_training_job(
        TrainingJobName=trial,
        AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
        RoleArn="arn:aws:iam::111122223333:role/sm-role-name",
        OutputDataConfig={"S3OutputPath": "s3://b/o"},
        ResourceConfig={"InstanceType": "ml.g5.2xlarge", "InstanceCount": 1,
                        "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 60})  # moto: Completed at once
    fake.put(tuning_job("tune-v", status={"hyperParameterTuningJobStatus": "InProgress"}))
    put(cloudwatch, f"{trial}/algo-1-1700000000", [(1000, "trial line")])
    assert logs(fake, "tune-v", "--trial", trial, "--follow", "--poll", "0.05") == 0
    assert capsys.readouterr().out == "trial line\n"
    assert logs(fake, "tune-v", "--trial", "tune-v-999-none", "--follow") == 1
    assert "ValidationException" in capsys.readouterr().err
