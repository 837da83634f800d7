"""`mtgrpo plot` (PNG curves from metrics.jsonl files or jobs, the same bytes twice) and
`mtgrpo metrics` (a job's last metric values from CloudWatch), against moto's SageMaker and
CloudWatch."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from mtgrpo.cli import main
from mtgrpo.operate.metric_series import NAMESPACE, period_for

FIXTURES = Path(__file__).parent / "fixtures" / "metrics"
REPO = Path(__file__).resolve().parent.parent
JOB = "demo-train-0123456789"


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.slow
def test_plot_two_runs_same_bytes_twice_and_across_processes(tmp_path, capsys):
    runs = [str(FIXTURES / "mt_grpo"), str(FIXTURES / "grpo_or" / "metrics.jsonl")]
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["plot", *runs, "--output", str(first), "--title", "t"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["plot", *runs, "--output", str(second), "--title", "t"]) == 0
    assert first.read_bytes() == second.read_bytes()
    assert _png_size(first.read_bytes()) == (1600, 750)
    assert first.stat().st_size > 20_000  # eight panels of curves, not an empty canvas
    third = tmp_path / "c.png"
    subprocess.run([sys.executable, "-m", "mtgrpo.cli", "plot", *runs, "--output", str(third),
                    "--title", "t"], check=True, cwd=REPO, capture_output=True,
                   env={"PYTHONHASHSEED": "7", "PATH": "/usr/bin:/bin",
                        "PYTHONPATH": str(REPO), "MPLCONFIGDIR": str(tmp_path / "mpl")})
    assert third.read_bytes() == first.read_bytes()
    assert b"Software" not in first.read_bytes() and b"matplotlib" not in first.read_bytes()
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.slow
def test_plot_draws_what_the_records_say(tmp_path):
    """A different record gives different bytes (the PNG is drawn from the data)."""
    from mtgrpo.curves import plot_runs

    records = [json.loads(x) for x in (FIXTURES / "mt_grpo" / "metrics.jsonl").read_text()
               .splitlines()]
    a = plot_runs([("run", records)], tmp_path / "a.png").read_bytes()
    records[3] = dict(records[3], reward=5.0)
    b = plot_runs([("run", records)], tmp_path / "b.png").read_bytes()
    assert a != b


@pytest.mark.parametrize("args,words", [
    (["missing-dir/metrics.jsonl"], "no such file or directory"),
    (["{bad}"], "not JSON"),
    (["{nostep}"], "integer step"),
    (["{fixture}", "--label", "a", "--label", "b"], "2 labels for 1 runs"),
    (["{emptydir}"], "holds no metrics.jsonl"),
])
def test_plot_bad_input_is_one_line(args, words, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1}\nnot json\n')
    nostep = tmp_path / "nostep.jsonl"
    nostep.write_text('{"reward": 1}\n')
    (tmp_path / "empty").mkdir()
    args = [a.format(bad=bad, nostep=nostep, fixture=FIXTURES / "mt_grpo",
                     emptydir=tmp_path / "empty") for a in args]
    out = tmp_path / "out.png"
    assert main(["plot", *args, "--output", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not out.exists()


def test_plot_without_matplotlib_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; from mtgrpo.cli import main; "
            f"sys.exit(main(['plot', {str(FIXTURES / 'mt_grpo')!r}, '--output', 'x.png']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1
    assert out.stderr.strip() == ("error: mtgrpo plot: matplotlib: is not installed "
                                  "(allowed: pip install 'mtgrpo[plot]')")


# -- CloudWatch ---------------------------------------------------------------------------------

@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    with mock_aws():
        sagemaker = boto3.client("sagemaker", region_name="us-west-2")
        sagemaker.create_training_job(
            TrainingJobName=JOB,
            AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File"},
            RoleArn="arn:aws:iam::111122223333:role/sm-role-name",
            OutputDataConfig={"S3OutputPath": "s3://b/o"},
            ResourceConfig={"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2,
                            "VolumeSizeInGB": 10},
            StoppingCondition={"MaxRuntimeInSeconds": 60})
        yield boto3.client("cloudwatch", region_name="us-west-2")


def publish(cloudwatch, records: list[dict], host: str = "algo-1") -> None:
    """As SageMaker does: each metric line's values at the line's time, dimension Host."""
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(seconds=50)
    for i, record in enumerate(records):
        stamp = start + dt.timedelta(seconds=2 * i)
        cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=[
            {"MetricName": name, "Timestamp": stamp, "Value": float(value),
             "Dimensions": [{"Name": "Host", "Value": f"{JOB}/{host}"}]}
            for name, value in sorted(record.items())])


def test_metrics_prints_the_last_values(aws, capsys):
    records = [json.loads(x) for x in (FIXTURES / "mt_grpo" / "metrics.jsonl").read_text()
               .splitlines()]
    publish(aws, records)
    publish(aws, [{"step": 99, "reward": -1.0}], host="algo-2")  # another host: not read
    assert main(["metrics", JOB, "--region", "us-west-2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["METRIC", "LAST", "TIME", "(UTC)", "POINTS"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["step"][1] == "15" and rows["step"][-1] == "15"
    assert float(rows["reward"][1]) == pytest.approx(records[-1]["reward"])
    assert rows["eval_reward"][-1] == "3"  # logged on steps 5, 10 and 15
    assert float(rows["eval_exact_match"][1]) == pytest.approx(records[-1]["eval_exact_match"])
    assert main(["metrics", JOB, "--region", "us-west-2", "--output", "json"]) == 0
    as_json = {r["metric"]: r for r in json.loads(capsys.readouterr().out)}
    assert as_json["grad_norm"]["value"] == pytest.approx(records[-1]["grad_norm"])


def test_plot_a_job_from_cloudwatch_equals_plotting_its_metrics_jsonl(aws, tmp_path):
    """Grouping CloudWatch points by time gives back the per-step records."""
    source = FIXTURES / "grpo_or" / "metrics.jsonl"
    publish(aws, [json.loads(x) for x in source.read_text().splitlines()])
    from_job, from_file = tmp_path / "job.png", tmp_path / "file.png"
    assert main(["plot", JOB, "--label", "grpo_or", "--output", str(from_job)]) == 0
    assert main(["plot", str(source), "--output", str(from_file)]) == 0
    assert from_job.read_bytes() == from_file.read_bytes()


def test_metrics_of_a_job_without_series_or_unknown(aws, capsys):
    assert main(["metrics", JOB, "--region", "us-west-2"]) == 1
    assert "no metric series in CloudWatch" in capsys.readouterr().err
    assert main(["metrics", "no-such-job", "--region", "us-west-2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ValidationException" in err[0], err


def test_period_follows_cloudwatch_retention():
    now = dt.datetime(2026, 1, 31, tzinfo=dt.timezone.utc)
    assert [period_for(now - age, now) for age in (
        dt.timedelta(hours=2), dt.timedelta(days=3), dt.timedelta(days=30),
        dt.timedelta(days=90))] == [1, 60, 300, 3600]
