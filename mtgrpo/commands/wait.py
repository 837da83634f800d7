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
    add_connection_arguments(parser)


def run(args) -> int:
    from mtgrpo import backends

    timeout, heartbeat = duration(args.timeout), duration(args.heartbeat)
    kube = connect_from_args(args)
    return backends.route(args.job).wait(kube, args.job, timeout_s=timeout,
                                         heartbeat_s=heartbeat)
