"""``mtgrpo artifacts JOB [--download DIR]``: the model artifact's S3 URI, optionally fetched."""

from __future__ import annotations

import sys
from pathlib import Path

from mtgrpo.operate import artifacts
from mtgrpo.operate.aws import aws_errors
from mtgrpo.operate.jobs import view
from mtgrpo.operate.kube import add_connection_arguments, connect_from_args


def add_arguments(parser) -> None:
    parser.add_argument("job", metavar="JOB", help="training or tuning job name")
    parser.add_argument("--download", metavar="DIR", type=Path,
                        help="download model.tar.gz and unpack it into DIR (new or empty)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_connection_arguments(parser)


def run(args) -> int:
    kube = connect_from_args(args)
    job = view(kube.find(args.job))
    uri = artifacts.artifact_uri(job)
    print(uri, flush=True)
    if args.download:
        with aws_errors(f"download of {uri}"):
            files = artifacts.download(uri, args.download, artifacts.s3_client(job.region),
                                       progress=not args.no_progress and sys.stderr.isatty())
        print(f"unpacked {len(files)} files into {args.download}", file=sys.stderr)
    return 0
