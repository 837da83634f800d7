"""Arguments shared by render, validate and diff."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_project_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="repository root holding recipes/, templates/ and manifests/ "
                             "(default: the current directory)")
    parser.add_argument("--crd-dir", type=Path, default=None,
                        help="directory with the ACK SageMaker CRDs to validate against "
                             "(default: crd_dir in recipes/_project.yaml, $MTGRPO_CRD_DIR, "
                             "or the copy shipped with mtgrpo)")
