"""A training job's metric series from CloudWatch, as per-step records like ``metrics.jsonl``.

With ``enableSageMakerMetricsTimeSeries`` on (every rendered job), SageMaker reads the
trainer's metric lines with the rendered regexes and publishes each value to CloudWatch:
namespace ``/aws/sagemaker/TrainingJobs``, dimension ``Host`` = ``<job>/algo-<N>``, metric name
= the metric definition's name. One metric line gives every metric the same timestamp, and
``step`` is one of them, so grouping the data points by timestamp gives back one record per
logged step.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

NAMESPACE = "/aws/sagemaker/TrainingJobs"
MAX_QUERIES = 500  # GetMetricData's limit per call


def host_value(job: str, host: str = "algo-1") -> str:
    return f"{job}/{host}"


def metric_names(cloudwatch: Any, job: str, host: str = "algo-1") -> list[str]:
    """Every metric the job published for ``host`` (ours and the recipe's extra ones)."""
    names: set[str] = set()
    paginator = cloudwatch.get_paginator("list_metrics")
    for page in paginator.paginate(Namespace=NAMESPACE, Dimensions=[
            {"Name": "Host", "Value": host_value(job, host)}]):
        names.update(m["MetricName"] for m in page.get("Metrics", []))
    return sorted(names)


def period_for(start: dt.datetime, now: dt.datetime) -> int:
    """The finest period CloudWatch still holds for data as old as ``start``: 1 s data is
    kept 3 hours, 60 s data 15 days, 5 min data 63 days, then 1 hour."""
    age = now - start
    if age <= dt.timedelta(hours=3):
        return 1
    if age <= dt.timedelta(days=15):
        return 60
    if age <= dt.timedelta(days=63):
        return 300
    return 3600


def series(cloudwatch: Any, job: str, names: Iterable[str], start: dt.datetime,
           end: dt.datetime, *, host: str = "algo-1",
           now: dt.datetime | None = None) -> dict[str, list[tuple[dt.datetime, float]]]:
    """``name -> [(timestamp, value), ...]`` in time order, for each metric in ``names``."""
    names = list(names)
    period = period_for(start, now or dt.datetime.now(dt.timezone.utc))
    out: dict[str, list[tuple[dt.datetime, float]]] = {name: [] for name in names}
    for first in range(0, len(names), MAX_QUERIES):
        chunk = names[first:first + MAX_QUERIES]
        queries = [{"Id": f"m{i}", "Label": name, "ReturnData": True, "MetricStat": {
            "Metric": {"Namespace": NAMESPACE, "MetricName": name,
                       "Dimensions": [{"Name": "Host", "Value": host_value(job, host)}]},
            "Period": period, "Stat": "Average"}} for i, name in enumerate(chunk)]
        paginator = cloudwatch.get_paginator("get_metric_data")
        for page in paginator.paginate(MetricDataQueries=queries, StartTime=start,
                                       EndTime=end, ScanBy="TimestampAscending"):
            for result in page.get("MetricDataResults", []):
                name = chunk[int(result["Id"][1:])]
                out[name] += zip(result.get("Timestamps", []), result.get("Values", []))
    return {name: sorted(points) for name, points in out.items()}


def records(by_name: dict[str, list[tuple[dt.datetime, float]]]) -> list[dict[str, float]]:
    """Per-step records (``step`` plus every value logged at the same time), by step."""
    by_time: dict[dt.datetime, dict[str, float]] = {}
    for name, points in by_name.items():
        for stamp, value in points:
            by_time.setdefault(stamp, {})[name] = value
    rows = [row for _, row in sorted(by_time.items()) if "step" in row]
    for row in rows:
        row["step"] = int(round(row["step"]))
    merged: dict[int, dict[str, float]] = {}
    for row in rows:  # a step logged twice (a restart) keeps its latest values
        merged.setdefault(int(row["step"]), {}).update(row)
    return [merged[step] for step in sorted(merged)]


def last_values(by_name: dict[str, list[tuple[dt.datetime, float]]]
                ) -> list[tuple[str, float, dt.datetime, int]]:
    """``(name, last value, its time, number of points)`` for each metric with data."""
    return [(name, points[-1][1], points[-1][0], len(points))
            for name, points in sorted(by_name.items()) if points]


def job_window(sagemaker: Any, job: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The job's start and end (now while it runs), from DescribeTrainingJob."""
    described = sagemaker.describe_training_job(TrainingJobName=job)
    start = described.get("TrainingStartTime") or described["CreationTime"]
    end = described.get("TrainingEndTime") or now
    return start - dt.timedelta(minutes=1), end + dt.timedelta(minutes=1)
