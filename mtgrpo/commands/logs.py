"""``mtgrpo logs JOB [--follow]``: the job's CloudWatch logs, all hosts interleaved by time."""

from __future__ import annotations

from mtgrpo.errors import Problem, UserError
from mtgrpo.operate import logs
from mtgrpo.operate.aws import aws_errors
from mtgrpo.operate.jobs import FINISHED, view
from mtgrpo.operate.kube import TUNING, add_connection_arguments, connect_from_args


def add_arguments(parser) -> None:
    parser.add_argument("job", metavar="JOB", help="training or tuning job name")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep printing new lines until the job has finished")
    parser.add_argument("--trial", metavar="NAME",
                        help="for a tuning job: this trial's logs (default: the best trial)")
    parser.add_argument("--poll", type=float, default=5.0, metavar="SECONDS",
                        help="how often --follow looks for new lines (default 5)")
    parser.add_argument("--node", type=int, default=0, metavar="RANK",
                        help="for trainjob/NAME: the pod of this node rank (default 0)")
    add_connection_arguments(parser)


def run(args) -> int:
    if args.poll <= 0:
        raise UserError(Problem("", "--poll", f"{args.poll:g} is not a positive number of seconds",
                                "a number > 0, e.g. 5"))
    kube = connect_from_args(args)
    from mtgrpo.kubeflow.operate import logs as pod_logs, train_job_name
    train_job = train_job_name(args.job)
    if train_job is not None:  # issue 17: backend kubeflow, from the pods
        if args.follow or args.trial:
            raise UserError(Problem(f"trainjob/{train_job}", "--follow" if args.follow
                                    else "--trial", "not supported for TrainJobs yet",
                                    "kubectl logs -f -l jobset.sigs.k8s.io/jobset-name="
                                    f"{train_job} -c node"))
        print(pod_logs(kube, train_job, node=args.node), end="", flush=True)
        return 0
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
