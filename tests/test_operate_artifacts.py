"""`mtgrpo artifacts` against moto's S3, the job found through the fake API server."""

from __future__ import annotations

import io
import tarfile

import boto3
import pytest
from moto import mock_aws

from fakekube import best_trial, fake, training_job, tuning_job  # noqa: F401
from mtgrpo.cli import main

BUCKET = "amzn-s3-demo-bucket"
FILES = {"config.json": b'{"model_type": "qwen2"}', "model.safetensors": b"\0" * 300_000,
         "tokenizer/tokenizer.json": b"{}"}


def tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-west-2")
        client.create_bucket(Bucket=BUCKET,
                             CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        yield client


def artifacts(fake, *args) -> int:
    return main(["artifacts", *args, "--kubeconfig", str(fake.kubeconfig)])


def completed(uri: str) -> dict:
    return {"trainingJobStatus": "Completed", "modelArtifacts": {"s3ModelArtifacts": uri}}


def test_prints_the_uri_and_downloads(fake, s3, tmp_path, capsys):
    key = "output/demo-job/output/model.tar.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=tarball(FILES))
    fake.put(training_job("demo-job", status=completed(f"s3://{BUCKET}/{key}")))
    dest = tmp_path / "model"
    assert artifacts(fake, "demo-job", "--download", str(dest)) == 0
    out, err = capsys.readouterr()
    assert out == f"s3://{BUCKET}/{key}\n"
    assert "unpacked 3 files" in err
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary left


def test_progress_bar(s3, tmp_path, capsys):
    from mtgrpo.operate.artifacts import download
    s3.put_object(Bucket=BUCKET, Key="m/model.tar.gz", Body=tarball(FILES))
    files = download(f"s3://{BUCKET}/m/model.tar.gz", tmp_path / "m", s3, progress=True)
    assert [f.name for f in files] == ["config.json", "model.safetensors", "tokenizer.json"]
    err = capsys.readouterr().err
    assert "model.tar.gz" in err and "100%" in err


def test_tuning_job_gives_the_best_trials_model(fake, capsys):
    fake.put(tuning_job("tune-z", status={"hyperParameterTuningJobStatus": "Completed",
                                          **best_trial("tune-z-007-cafe", {})}))
    assert artifacts(fake, "tune-z") == 0
    assert capsys.readouterr().out == \
        f"s3://{BUCKET}/tuning/tune-z-007-cafe/output/model.tar.gz\n"


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_running_job_has_no_artifact(fake, capsys):
    fake.put(training_job("demo-run", status={"trainingJobStatus": "InProgress"}))
    assert artifacts(fake, "demo-run") == 1
    assert "no model artifact: the job is InProgress, not Completed" in one_line(capsys)


def test_tuning_job_without_best(fake, capsys):
    fake.put(tuning_job("tune-w", status={"hyperParameterTuningJobStatus": "InProgress"}))
    assert artifacts(fake, "tune-w") == 1
    assert "no best training job yet" in one_line(capsys)


def test_missing_object(fake, s3, tmp_path, capsys):
    fake.put(training_job("demo-gone", status=completed(f"s3://{BUCKET}/nope/model.tar.gz")))
    assert artifacts(fake, "demo-gone", "--download", str(tmp_path / "m")) == 1
    assert "cannot download: 404" in one_line(capsys)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.slow
def test_corrupt_archive_leaves_nothing(fake, s3, tmp_path, capsys):
    s3.put_object(Bucket=BUCKET, Key="bad/model.tar.gz", Body=b"not a tarball")
    fake.put(training_job("demo-bad", status=completed(f"s3://{BUCKET}/bad/model.tar.gz")))
    assert artifacts(fake, "demo-bad", "--download", str(tmp_path / "m")) == 1
    assert "not a readable .tar.gz archive" in one_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_archive_escaping_the_directory_is_refused(fake, s3, tmp_path, capsys):
    s3.put_object(Bucket=BUCKET, Key="evil/model.tar.gz", Body=tarball({"../evil": b"x"}))
    fake.put(training_job("demo-evil", status=completed(f"s3://{BUCKET}/evil/model.tar.gz")))
    assert artifacts(fake, "demo-evil", "--download", str(tmp_path / "d" / "m")) == 1
    assert "member '../evil': has an empty, '.' or '..' segment" in one_line(capsys)
    assert not (tmp_path / "d" / "evil").exists() and not (tmp_path / "evil").exists()


def test_non_empty_destination(fake, s3, tmp_path, capsys):
    fake.put(training_job("demo-job", status=completed(f"s3://{BUCKET}/x/model.tar.gz")))
    (tmp_path / "keep.txt").write_text("mine")
    assert artifacts(fake, "demo-job", "--download", str(tmp_path)) == 1
    assert "--download: exists and is not an empty directory" in one_line(capsys)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_no_credentials(fake, capsys, monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    fake.put(training_job("demo-job", status=completed(f"s3://{BUCKET}/x/model.tar.gz")))
    assert artifacts(fake, "demo-job", "--download", str(tmp_path / "m")) == 1
    assert "AWS credentials" in one_line(capsys)
    assert not (tmp_path / "m").exists()
