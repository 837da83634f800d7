"""``mtgrpo status [RECIPE|JOB ...]``: the jobs' state, from the cluster."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

from mtgrpo.operate import status
from mtgrpo.operate.kube import TUNING, add_connection_arguments, connect_from_args


def add_arguments(parser) -> None:
    parser.add_argument("selectors", nargs="*", metavar="RECIPE|JOB",
                        help="job names, recipe names or recipe files (default: every job); "
                             "a recipe file also shows its current jobs not yet applied")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table",
                        help="a readable table (default) or JSON for scripts")
    parser.add_argument("--no-aws", action="store_true",
                        help="do not ask SageMaker for tuning jobs' trial counts")
    add_connection_arguments(parser)


def run(args) -> int:
    kube = connect_from_args(args)
    # trainjob/NAME selectors and backend: kubeflow recipe files are read on their own
    from mtgrpo.kubeflow import experiment
    from mtgrpo.kubeflow.operate import in_namespace, recipe_targets, status_line, \
        train_job_name
    rest = []
    for selector in args.selectors:
        name = train_job_name(selector)
        targets = recipe_targets(selector) if name is None else None
        if name is not None:
            print(status_line(kube, name))
        elif targets is not None:  # what the recipe renders to now, where it renders it
            for kind, name, namespace in targets:
                line = experiment.status_line if kind == "Experiment" else status_line
                print(line(in_namespace(kube, namespace), name, recipe=selector))
        else:
            rest.append(selector)
    if rest != args.selectors and not rest:
        return 0
    args.selectors = rest
    jobs = status.select(kube, args.selectors)
    if not args.no_aws:
        clients = status.sagemaker_clients()
        counts = {j.name: status.trial_counts(j, clients) for j in jobs
                  if j.kind == TUNING and j.status != status.NOT_APPLIED}
    else:
        counts = {j.name: "not asked: --no-aws" for j in jobs if j.kind == TUNING}
    records = status.as_records(jobs, datetime.now(timezone.utc), counts)
    if args.output == "json":
        print(status.to_json(records))
    elif records:
        print(status.to_table(records))
    else:
        print(f"no jobs in namespace {kube.namespace}", file=sys.stderr)
    return 0
