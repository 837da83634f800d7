"""``mtgrpo render``: validate every recipe, then write manifests/ and kustomization.yaml."""

from __future__ import annotations

import argparse

from mtgrpo.commands._project import add_project_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_project_arguments(parser)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the committed files differ (= mtgrpo diff)")


def run(args: argparse.Namespace) -> int:
    if args.check:
        from mtgrpo.commands import diff
        return diff.run(argparse.Namespace(root=args.root, crd_dir=args.crd_dir, quiet=False,
                                           placeholders=args.placeholders))
    from mtgrpo.commands._project import guard_placeholders
    from mtgrpo.render import render_all

    result = guard_placeholders(args.root, None, args.placeholders, lambda dry: render_all(
        args.root, write=not dry, crd_dir=args.crd_dir))
    for rel in result.written:
        print(f"wrote {rel}")
    for rel in result.removed:
        print(f"removed {rel}")
    print(f"rendered {len(result.recipes)} recipes into {len(result.resources)} resources "
          f"({len(result.written)} files written, {len(result.removed)} removed)")
    return 0
