"""``mtgrpo status [RECIPE|JOB ...]``: the jobs' state, from the cluster."""

from __future__ import annotations

from mtgrpo.operate.kube import add_connection_arguments, connect_from_args


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
    from mtgrpo import backends

    kube = connect_from_args(args)
    routed: dict[str, list[str]] = {}
    for selector in args.selectors:  # each selector to the backend that answers it
        routed.setdefault(backends.route(selector).name, []).append(selector)
    if not args.selectors:  # every job of the backends that list jobs by name
        routed = {b.name: [] for b in backends.registry().values() if b.bare_names}
    code = 0
    for name, selectors in routed.items():
        code = max(code, backends.get(name).status(kube, selectors, output=args.output,
                                                   ask_cloud=not args.no_aws))
    return code
