"""``mtgrpo diff``: re-render in memory, compare with manifests/ and kustomization.yaml.

Exit 0 when they match, 1 with a unified diff and a summary when they drift (what CI runs).
"""

from __future__ import annotations

import argparse
import sys

from mtgrpo.commands._project import add_project_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_project_arguments(parser)
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="print only the summary, not the unified diff")


def run(args: argparse.Namespace) -> int:
    from mtgrpo.commands._project import guard_placeholders
    from mtgrpo.gitops import compare
    from mtgrpo.render import render_all

    result = guard_placeholders(args.root, None, getattr(args, "placeholders", None),
                                lambda dry: render_all(args.root, write=False,
                                                       crd_dir=args.crd_dir))
    drift = compare(result.root, result.files)
    if drift.clean:
        print(f"no drift: {len(result.resources)} resources match "
              f"{len(result.recipes)} recipes")
        return 0
    if not args.quiet:
        sys.stdout.write(drift.diff)
    print(drift.summary())
    print("manifests drift from recipes: run `mtgrpo render` and commit manifests/ and "
          "kustomization.yaml", file=sys.stderr)
    return 1
