"""``mtgrpo wait JOB|RECIPE``: wait until the job is Completed (0), Failed/Stopped (1), Terminal (2)."""

from __future__ import annotations

import re

from mtgrpo.errors import Problem, UserError
from mtgrpo.operate.kube import add_connection_arguments, connect_from_args

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise UserError(Problem("", "--timeout", f"{text!r} is not a duration",
                                "a positive number of seconds, or with s, m, h or d: 90m"))
    return float(match.group(1)) * _UNITS[match.group(2)]


def add_arguments(parser) -> None:
    parser.add_argument("job", metavar="JOB|RECIPE",
                        help="job name (or trainingjob/NAME, hyperparametertuningjob/NAME), or "
                             "a recipe file: its jobs as rendered now, one after the other")
    parser.add_argument("--timeout", default="28d",
                        help="give up after this long and exit 124 (default 28d, SageMaker's "
                             "longest run; 90m, 2h, 3600 ...)")
    parser.add_argument("--heartbeat", default="5m",
                        help="print a line at least this often while nothing changes")
    parser.add_argument("--track", action="store_true",
                        help="then write the jobs' runs to MLflow / W&B, as `mtgrpo track` "
                             "does (a failed or stopped job's too)")
    from mtgrpo.commands.track import add_tracking_arguments

    add_tracking_arguments(parser)
    add_connection_arguments(parser)


def run(args) -> int:
    from mtgrpo import backends

    timeout, heartbeat = duration(args.timeout), duration(args.heartbeat)
    backend = backends.route(args.job)
    if args.track and "track" not in backend.commands:
        serving = [b.name for b in backends.registry().values() if "track" in b.commands]
        raise UserError(Problem(args.job, "--track", f"backend {backend.name}'s jobs log their "
                                "runs themselves (their pods reach the network: the recipe's "
                                "tracking: section)", "a job or recipe of backend "
                                + " or ".join(serving)))
    kube = connect_from_args(args)
    code = backend.wait(kube, args.job, timeout_s=timeout, heartbeat_s=heartbeat)
    if args.track and code != 124:  # a finished job's run, whatever its outcome
        _track(kube, args)
    return code


def _track(kube, args) -> None:
    """``--track``: the runs of the jobs just waited for, written from outside
    (docs/metrics.md): SageMaker job names, as the job's spec holds them."""
    from pathlib import Path

    from mtgrpo.commands.track import track_jobs
    from mtgrpo.operate.jobs import recipe_resources, view

    found = recipe_resources(args.job, "wait")
    if found is None:
        names = [view(kube.find(args.job)).job_name]
    else:
        names = [view(kube.get(r.kind, r.name)).job_name for r in found[1]]
        if args.recipe is None:
            args.recipe = Path(args.job)
    args.region, args.host = getattr(args, "region", ""), "algo-1"
    track_jobs(names, args)
