"""``mtgrpo wait JOB|RECIPE``: wait until the job is Completed (0), Failed/Stopped (1), Terminal (2)."""

from __future__ import annotations

import re
import sys

from mtgrpo.errors import Problem, UserError
from mtgrpo.operate.kube import add_connection_arguments, connect_from_args
from mtgrpo.operate.wait import wait_for

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
    timeout, heartbeat = duration(args.timeout), duration(args.heartbeat)
    kube = connect_from_args(args)
    from mtgrpo.kubeflow.operate import recipe_targets, train_job_name
    train_job = train_job_name(args.job)
    kubeflow = [("TrainJob", train_job, "")] if train_job is not None else \
        recipe_targets(args.job)
    if kubeflow is not None:  # backend kubeflow (a TrainJob or a recipe file)
        if train_job is None:
            _check_applied(kube, args.job, kubeflow)
        return _wait_kubeflow(kube, kubeflow, timeout, min(heartbeat, 10.0))
    targets = _recipe_targets(args.job)
    missing = [Problem(args.job, kind, f"{name} is not in namespace {kube.namespace}",
                       "an applied recipe: kubectl apply -k . (or let Argo CD sync)")
               for kind, name in targets if not kube.exists(kind, name)]
    if missing:
        raise UserError(missing)
    if not targets:
        found = kube.find(args.job)
        targets = [(found["kind"], found["metadata"]["name"])]

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    for kind, name in targets:  # a recipe's tuning job, then its training job
        outcome = wait_for(kube, kind, name, timeout_s=timeout, progress=progress,
                           heartbeat_s=heartbeat)
        print(outcome.message, flush=True)
        if outcome.code:
            return outcome.code
    return 0


def _recipe_targets(arg: str) -> list[tuple[str, str]]:
    from mtgrpo.operate.jobs import recipe_resources

    found = recipe_resources(arg, "wait")
    return [] if found is None else [(r.kind, r.name) for r in found[1]]


def _wait_kubeflow(kube, targets, timeout: float, poll_s: float) -> int:
    """Wait for a recipe's Experiment, then its TrainJob (when both are rendered)."""
    from mtgrpo.kubeflow import experiment
    from mtgrpo.kubeflow.operate import in_namespace, wait

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    for kind, name, namespace in sorted(targets, key=lambda t: t[0] != "Experiment"):
        where = in_namespace(kube, namespace)
        waiter = experiment.wait if kind == "Experiment" else wait
        code, message = waiter(where, name, timeout_s=timeout, poll_s=poll_s,
                               progress=progress)
        print(message, flush=True)
        if code:
            return code
    return 0


def _check_applied(kube, recipe_file: str, targets) -> None:
    """Every resource the Kubeflow recipe renders to is in the cluster (all missing in one go)."""
    from mtgrpo.kubeflow import experiment, operate

    missing = []
    for kind, name, namespace in targets:
        where = operate.in_namespace(kube, namespace)
        getter = experiment.get if kind == "Experiment" else operate.get
        if getter(where, name) is None:
            missing.append(Problem(recipe_file, kind, f"{name} is not in namespace "
                                   f"{where.namespace}", "an applied recipe: kubectl apply "
                                   "-k . (or let Argo CD sync)"))
    if missing:
        raise UserError(missing)
