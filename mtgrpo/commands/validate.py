"""``mtgrpo validate``: every check ``render`` runs, writing nothing."""

from __future__ import annotations

import argparse
from pathlib import Path

from mtgrpo.commands._project import add_project_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_project_arguments(parser)
    parser.add_argument("recipes", nargs="*", type=Path, metavar="RECIPE",
                        help="recipe files to check (default: every recipe under recipes/)")


def run(args: argparse.Namespace) -> int:
    from mtgrpo.commands._project import guard_placeholders
    from mtgrpo.render import render_all

    paths = list(args.recipes) or None
    result = guard_placeholders(args.root, paths, args.placeholders, lambda dry: render_all(
        args.root, write=False, crd_dir=args.crd_dir, recipe_paths=paths))
    print(f"ok: {len(result.recipes)} recipes, {len(result.resources)} resources valid")
    return 0
