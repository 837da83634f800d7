"""``mtgrpo plot RUN... --output curves.png``: training curves of one or more runs in one PNG.

A RUN is a ``metrics.jsonl`` file, a run directory holding one (``mtgrpo train --output DIR``),
or a SageMaker training job name, whose series are read from CloudWatch as ``mtgrpo metrics``
does. Several runs are drawn side by side, one colour each (mt_grpo against grpo_or, or the
trials of a tuning job).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from mtgrpo.errors import Problem, UserError


def add_arguments(parser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="metrics.jsonl, a run directory holding one, or a training job name")
    parser.add_argument("-o", "--output", required=True, metavar="PNG", help="the PNG to write")
    parser.add_argument("--label", action="append", default=[], metavar="NAME",
                        help="legend name of each RUN in order (default: directory or job name)")
    parser.add_argument("--title", default="", help="a title above the panels")
    parser.add_argument("--region", default="", help="AWS region of the jobs (default: AWS "
                                                     "configuration)")
    parser.add_argument("--host", default="algo-1", help="the job's host that logs metrics "
                                                         "(default algo-1)")


def read_jsonl(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(Problem(str(path), f"line {number}", f"not JSON: {err.msg}",
                                    "one JSON object per line, as the trainer writes")) from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise UserError(Problem(str(path), f"line {number}", "a record needs an integer "
                                    "step", '{"step": 1, "reward": 0.5, ...}'))
        records.append(record)
    return records


def load_run(run: str, region: str, host: str) -> tuple[str, list[dict]]:
    """(default label, records) of one RUN argument."""
    path = Path(run)
    if path.is_dir():
        path = path / "metrics.jsonl"
        if not path.is_file():
            raise UserError(Problem(run, "RUN", "the directory holds no metrics.jsonl",
                                    "a run directory of `mtgrpo train --output DIR`"))
        return _with_algorithm(Path(run).resolve().name, Path(run)), read_jsonl(path)
    if path.is_file():
        label = path.parent.resolve().name if path.name == "metrics.jsonl" else path.stem
        return _with_algorithm(label, path.parent), read_jsonl(path)
    if "/" in run or run.endswith(".jsonl"):
        raise UserError(Problem(run, "RUN", "no such file or directory",
                                "metrics.jsonl, a run directory or a training job name"))
    return run, job_records(run, region, host)


def _with_algorithm(label: str, directory: Path) -> str:
    """``label (algorithm)`` when the run's eval_summary.json names it, so MT-GRPO and a GRPO
    baseline read apart in the legend without --label."""
    try:
        algorithm = json.loads((directory / "eval_summary.json").read_text(encoding="utf-8"))[
            "algorithm"]
    except (OSError, ValueError, KeyError, TypeError):
        return label
    return f"{label} ({algorithm})" if isinstance(algorithm, str) and algorithm not in label \
        else label


def job_records(job: str, region: str, host: str) -> list[dict]:
    from mtgrpo.operate import metric_series
    from mtgrpo.operate.aws import aws_errors, client

    now = dt.datetime.now(dt.timezone.utc)
    with aws_errors(f"metrics of {job}"):
        start, end = metric_series.job_window(client("sagemaker", region), job, now)
        cloudwatch = client("cloudwatch", region)
        names = metric_series.metric_names(cloudwatch, job, host)
        found = metric_series.series(cloudwatch, job, names, start, end, host=host, now=now)
    records = metric_series.records(found)
    if not records:
        raise UserError(Problem(job, "RUN", f"no metric series in CloudWatch for host {host}",
                                "a job that logged steps, with metric time series on"))
    return records


def run(args) -> int:
    from mtgrpo.curves import _matplotlib, plot_runs

    _matplotlib()  # the missing-extra error before any AWS call
    if args.label and len(args.label) != len(args.runs):
        raise UserError(Problem("mtgrpo plot", "--label", f"{len(args.label)} labels for "
                                f"{len(args.runs)} runs", "one --label per RUN, or none"))
    runs = []
    for i, run_arg in enumerate(args.runs):
        label, records = load_run(run_arg, args.region, args.host)
        runs.append((args.label[i] if args.label else label, records))
    path = plot_runs(runs, args.output, title=args.title)
    print(f"wrote {path} ({len(runs)} run{'s' if len(runs) != 1 else ''})")
    return 0
