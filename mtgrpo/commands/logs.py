"""``mtgrpo logs JOB [--follow]``: the job's CloudWatch logs, all hosts interleaved by time;
for ``trainjob/NAME`` or a ``backend: kubeflow`` recipe file, a node pod's log."""

from __future__ import annotations

from mtgrpo.errors import Problem, UserError
from mtgrpo.operate import logs
from mtgrpo.operate.aws import aws_errors
from mtgrpo.operate.jobs import FINISHED, view
from mtgrpo.operate.kube import TUNING, add_connection_arguments, connect_from_args


def add_arguments(parser) -> None:
    parser.add_argument("job", metavar="JOB", help="training or tuning job name, trainjob/NAME, "
                                                   "or a backend: kubeflow recipe file")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep printing new lines until the job has finished")
    parser.add_argument("--trial", metavar="NAME",
                        help="for a tuning job or a Kubeflow tuning recipe: this trial's logs "
                             "(default: the best trial)")
    parser.add_argument("--poll", type=float, default=5.0, metavar="SECONDS",
                        help="how often --follow looks for new lines (default 5)")
    parser.add_argument("--node", type=int, default=0, metavar="RANK",
                        help="for trainjob/NAME or a Kubeflow recipe: the pod of this node rank "
                             "(default 0)")
    add_connection_arguments(parser)


def run(args) -> int:
    if args.poll <= 0:
        raise UserError(Problem("", "--poll", f"{args.poll:g} is not a positive number of seconds",
                                "a number > 0, e.g. 5"))
    kube = connect_from_args(args)
    from mtgrpo.kubeflow.operate import recipe_targets, train_job_name
    train_job = train_job_name(args.job)
    targets = recipe_targets(args.job) if train_job is None else None
    if targets is not None:  # a backend: kubeflow recipe file
        kube, train_job = _recipe_train_job(kube, args.job, targets, args.trial)
    elif train_job is not None and args.trial:
        raise UserError(Problem(f"trainjob/{train_job}", "--trial", "only a tuning recipe "
                                "(a Katib Experiment) has trials", "a trial's own "
                                "trainjob/NAME, or a backend: kubeflow tuning recipe file"))
    if train_job is not None:  # backend kubeflow, from the pods
        return _train_job_logs(kube, train_job, args)
    obj = kube.find(args.job)
    job = view(obj)
    if job.kind == TUNING:
        trial = args.trial or job.best.get("name")
        if not trial:
            raise UserError(Problem(f"{job.kind} {job.name}", "--trial",
                                    "the tuning job has no best trial yet; name one",
                                    f"a trial name starting with {job.job_name}-"))
    elif args.trial:
        raise UserError(Problem(f"{job.kind} {job.name}", "--trial",
                                "only a tuning job has trials", "a HyperParameterTuningJob"))
    else:
        trial = job.job_name
    with aws_errors(f"logs of {trial}"):
        reader = logs.LogReader(logs.logs_client(job.region), trial)
        running = _running_check(kube, job, trial)
        logs.print_logs(reader, lambda line: print(line, flush=True), follow=args.follow,
                        running=running, poll_s=args.poll)
    return 0


def _running_check(kube, job, trial: str):
    """Whether the job whose logs are printed is still running (asked while following)."""
    if job.kind != TUNING:
        return lambda: view(kube.get(job.kind, job.name)).status not in FINISHED

    from mtgrpo.operate.aws import client

    sagemaker = client("sagemaker", job.region)
    return lambda: sagemaker.describe_training_job(TrainingJobName=trial)[
        "TrainingJobStatus"] in ("InProgress", "Stopping")


def _train_job_logs(kube, name: str, args) -> int:
    import sys

    from mtgrpo.kubeflow.follow import follow
    from mtgrpo.kubeflow.operate import logs as pod_logs

    if not args.follow:
        print(pod_logs(kube, name, node=args.node), end="", flush=True)
        return 0
    return follow(kube, name, node=args.node, poll_s=args.poll,
                  write=lambda line: print(line, flush=True),
                  note=lambda line: print(line, file=sys.stderr, flush=True))


def _recipe_train_job(kube, recipe_file: str, targets, trial: str | None):
    """(connection in the recipe's namespace, TrainJob name) of a Kubeflow recipe file: its
    TrainJob, or for a tuning recipe the trial ``--trial`` names, else Katib's best trial."""
    from mtgrpo.kubeflow import experiment
    from mtgrpo.kubeflow.operate import TRAIN_JOB_KIND, in_namespace

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
