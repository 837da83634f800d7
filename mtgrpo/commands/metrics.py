"""``mtgrpo metrics JOB``: the last value of each of a training job's metrics, from CloudWatch.

SageMaker publishes the trainer's metric lines as CloudWatch series (namespace
``/aws/sagemaker/TrainingJobs``, dimension ``Host``); this prints, per metric, its last value,
when it was logged and how many points the series has. Needs AWS credentials
(cloudwatch:ListMetrics, cloudwatch:GetMetricData, sagemaker:DescribeTrainingJob).
"""

from __future__ import annotations

import datetime as dt
import json

from mtgrpo.errors import Problem, UserError


def add_arguments(parser) -> None:
    parser.add_argument("job", metavar="JOB", help="SageMaker training job name")
    parser.add_argument("--region", default="", help="AWS region (default: AWS configuration)")
    parser.add_argument("--host", default="algo-1", help="the host whose series are read "
                                                         "(default algo-1, the one that logs)")
    parser.add_argument("--output", choices=("table", "json"), default="table",
                        help="table (default) or json for scripts")


def run(args) -> int:
    from mtgrpo.operate import metric_series
    from mtgrpo.operate.aws import aws_errors, client

    now = dt.datetime.now(dt.timezone.utc)
    with aws_errors(f"metrics of {args.job}"):
        start, end = metric_series.job_window(client("sagemaker", args.region), args.job, now)
        cloudwatch = client("cloudwatch", args.region)
        names = metric_series.metric_names(cloudwatch, args.job, args.host)
        found = metric_series.series(cloudwatch, args.job, names, start, end, host=args.host,
                                     now=now)
    rows = metric_series.last_values(found)
    if not rows:
        raise UserError(Problem(args.job, "metrics", f"no metric series in CloudWatch for host "
                                f"{args.host}", "a job that has logged a step, with metric "
                                "time series on (job.enable_sagemaker_metrics)"))
    if args.output == "json":
        print(json.dumps([{"metric": n, "value": v, "time": t.isoformat(), "points": c}
                          for n, v, t, c in rows], indent=2))
        return 0
    table = [("METRIC", "LAST", "TIME (UTC)", "POINTS")] + [
        (n, f"{v:.6g}", t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"), str(c))
        for n, v, t, c in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
