"""``mtgrpo status``, ``wait`` and ``logs`` for Kubeflow: ``trainjob/NAME`` selectors and
``backend: kubeflow`` recipe files (its TrainJob, or its Katib Experiment and the best trial's
TrainJob). The readers are :mod:`mtgrpo.kubeflow.operate`, :mod:`.experiment` and
:mod:`.follow`."""

from __future__ import annotations

import sys
from typing import Any, Sequence

from mtgrpo.errors import Problem, UserError
from mtgrpo.kubeflow import experiment
from mtgrpo.kubeflow.operate import (TRAIN_JOB_KIND, in_namespace, recipe_targets, status_line,
                                     train_job_name)


def _targets(selector: str) -> list[tuple[str, str, str]]:
    """(kind, name, namespace) a selector names: ``trainjob/NAME``, or a recipe file's."""
    name = train_job_name(selector)
    if name is not None:
        return [(TRAIN_JOB_KIND, name, "")]
    found = recipe_targets(selector)
    if found is None:
        raise UserError(Problem(selector, "", "not a trainjob/NAME nor a backend: kubeflow "
                                "recipe file", "trainjob/NAME or a recipe file"))
    return found


def status(kube: Any, selectors: Sequence[str], *, output: str, ask_cloud: bool) -> int:
    for selector in selectors:
        name = train_job_name(selector)
        if name is not None:
            print(status_line(kube, name))
            continue
        for kind, name, namespace in _targets(selector):  # what the recipe renders to now
            line = experiment.status_line if kind == "Experiment" else status_line
            print(line(in_namespace(kube, namespace), name, recipe=selector))
    return 0


def wait(kube: Any, selector: str, *, timeout_s: float, heartbeat_s: float) -> int:
    """Wait for a recipe's Experiment, then its TrainJob (when both are rendered)."""
    from mtgrpo.kubeflow.operate import wait as wait_train_job

    targets = _targets(selector)
    if train_job_name(selector) is None:
        _check_applied(kube, selector, targets)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    for kind, name, namespace in sorted(targets, key=lambda t: t[0] != "Experiment"):
        where = in_namespace(kube, namespace)
        waiter = experiment.wait if kind == "Experiment" else wait_train_job
        code, message = waiter(where, name, timeout_s=timeout_s,
                               poll_s=min(heartbeat_s, 10.0), progress=progress)
        print(message, flush=True)
        if code:
            return code
    return 0


def _check_applied(kube: Any, recipe_file: str, targets) -> None:
    """Every resource the Kubeflow recipe renders to is in the cluster (all missing in one go)."""
    from mtgrpo.kubeflow import operate

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


def logs(kube: Any, selector: str, *, follow: bool, trial: str | None, node: int,
         poll_s: float) -> int:
    from mtgrpo.kubeflow.follow import follow as follow_logs
    from mtgrpo.kubeflow.operate import logs as pod_logs

    train_job = train_job_name(selector)
    if train_job is None:  # a backend: kubeflow recipe file
        kube, train_job = _recipe_train_job(kube, selector, _targets(selector), trial)
    elif trial:
        raise UserError(Problem(f"trainjob/{train_job}", "--trial", "only a tuning recipe "
                                "(a Katib Experiment) has trials", "a trial's own "
                                "trainjob/NAME, or a backend: kubeflow tuning recipe file"))
    if not follow:
        print(pod_logs(kube, train_job, node=node), end="", flush=True)
        return 0
    return follow_logs(kube, train_job, node=node, poll_s=poll_s,
                       write=lambda line: print(line, flush=True),
                       note=lambda line: print(line, file=sys.stderr, flush=True))


def _recipe_train_job(kube: Any, recipe_file: str, targets, trial: str | None):
    """(connection in the recipe's namespace, TrainJob name) of a Kubeflow recipe file: its
    TrainJob, or for a tuning recipe the trial ``--trial`` names, else Katib's best trial."""
    jobs = [(name, ns) for kind, name, ns in targets if kind == TRAIN_JOB_KIND]
    experiments = [(name, ns) for kind, name, ns in targets if kind == "Experiment"]
    if jobs and not (trial and experiments):
        if trial:
            raise UserError(Problem(recipe_file, "--trial", "only a tuning recipe (a Katib "
                                    "Experiment) has trials", "no --trial"))
        return in_namespace(kube, jobs[0][1]), jobs[0][0]
    name, ns = experiments[0]
    kube = in_namespace(kube, ns)
    if trial:  # Katib names a trial's TrainJob as the trial
        return kube, trial
    obj = experiment.get(kube, name)
    if obj is None:
        raise UserError(Problem(f"namespace {kube.namespace}", f"experiment/{name}",
                                f"no Katib Experiment of that name (rendered from "
                                f"{recipe_file}; not applied yet?)",
                                "kubectl apply -k . (or let Argo CD sync)"))
    best = ((obj.get("status") or {}).get("currentOptimalTrial") or {}).get("bestTrialName")
    if not best:
        raise UserError(Problem(f"experiment/{name}", "--trial", "the Experiment has no best "
                                "trial yet; name one", f"a trial name starting with {name}- "
                                f"(kubectl get trials -l katib.kubeflow.org/experiment={name})"))
    return kube, best
