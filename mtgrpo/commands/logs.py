"""``mtgrpo logs JOB [--follow]``: the job's log from its backend (mtgrpo/backends/all.py):
ACK SageMaker jobs from CloudWatch, all hosts interleaved by time; ``trainjob/NAME`` or a
``backend: kubeflow`` recipe file from a node pod."""

from __future__ import annotations

from mtgrpo.errors import Problem, UserError
from mtgrpo.operate.kube import add_connection_arguments, connect_from_args


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
    from mtgrpo import backends

    if args.poll <= 0:
        raise UserError(Problem("", "--poll", f"{args.poll:g} is not a positive number of seconds",
                                "a number > 0, e.g. 5"))
    kube = connect_from_args(args)
    return backends.route(args.job).logs(kube, args.job, follow=args.follow, trial=args.trial,
                                         node=args.node, poll_s=args.poll)
