"""``mtgrpo pipeline RECIPE --output FILE``: compile the tune-then-train Kubeflow pipeline;
``mtgrpo pipeline --rbac``: the Role and RoleBinding its service account needs."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from mtgrpo.commands.wait import duration
from mtgrpo.errors import Problem, UserError

PIPELINE_ACCOUNT = "mtgrpo-pipeline"  # the pipeline's own service account (deploy/pipelines)


def add_arguments(parser) -> None:
    parser.add_argument("recipe", nargs="?", metavar="RECIPE", help="a tuning recipe file")
    parser.add_argument("-o", "--output", metavar="FILE", type=Path,
                        help="where to write the YAML (default: standard output)")
    parser.add_argument("--image", help="image the steps run in (default: the recipe's "
                                        "job.image_uri, the trainer image, which has mtgrpo)")
    parser.add_argument("--pip", action="append", default=[], metavar="REQUIREMENT",
                        help="pip-install this at step start (repeatable), e.g. "
                             "'mtgrpo[pipelines]==0.1.0' with --image python:3.11-slim")
    parser.add_argument("--tuning-timeout", help="give up on the tuning job after this long "
                                                 "(default: trial waves x job.max_run + 1h)")
    parser.add_argument("--training-timeout", help="give up on the training job after this "
                                                   "long (default: job.max_wait or max_run + 1h)")
    rbac = parser.add_argument_group("RBAC (with --rbac, no pipeline is compiled)")
    rbac.add_argument("--rbac", action="store_true",
                      help="write the Role + RoleBinding the run's service account needs")
    rbac.add_argument("--service-account", default=PIPELINE_ACCOUNT,
                      help=f"the runs' service account (default: {PIPELINE_ACCOUNT}, one of "
                           "its own, not the pipeline-runner every pipeline shares)")
    rbac.add_argument("--service-account-namespace", default="kubeflow",
                      help="its namespace, where the runs' pods run (default: kubeflow, KFP "
                           "standalone)")
    rbac.add_argument("--create-service-account", action=argparse.BooleanOptionalAction,
                      default=True, help="also write the ServiceAccount (default: on; "
                                         "--no-create-service-account for an existing one)")
    rbac.add_argument("--root", type=Path, default=Path("."),
                      help="project root holding recipes/_project.yaml (default: .)")


def run(args) -> int:
    if args.rbac:
        from mtgrpo.pipelines.rbac import rbac_yaml
        from mtgrpo.recipes import find_root
        from mtgrpo.render import load_settings

        root = find_root(Path(args.recipe)) if args.recipe else args.root
        settings = load_settings(root)
        text = rbac_yaml(settings.namespace, args.service_account,
                         args.service_account_namespace, args.create_service_account).encode()
    else:
        if not args.recipe:
            raise UserError(Problem("", "RECIPE", "missing", "a tuning recipe file, or --rbac"))
        if not Path(args.recipe).is_file():
            raise UserError(Problem(args.recipe, "RECIPE", "no such file", "a tuning recipe file"))
        from mtgrpo.commands._extras import require

        require("pipelines", "pipeline")
        from mtgrpo.pipelines.pipeline import PipelineOptions, compile_pipeline

        options = PipelineOptions(
            image=args.image or "", packages=tuple(args.pip),
            tuning_timeout_s=duration(args.tuning_timeout) if args.tuning_timeout else 0.0,
            training_timeout_s=duration(args.training_timeout) if args.training_timeout else 0.0)
        text = compile_pipeline(args.recipe, options)
    if args.output is None:
        sys.stdout.buffer.write(text)
    else:
        _write_atomically(args.output, text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
