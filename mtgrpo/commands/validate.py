"""``mtgrpo validate``: every check ``render`` runs, writing nothing."""

from __future__ import annotations

import argparse
from pathlib import Path

from mtgrpo.commands._project import add_project_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_project_arguments(parser)
    parser.add_argument("recipes", nargs="*", type=Path, metavar="RECIPE",
                        help="recipe files to check (default: every recipe under recipes/); a "
                             "local `mtgrpo train` config (a trainer: section and no job:) is "
                             "checked as `mtgrpo train` would check it")


def run(args: argparse.Namespace) -> int:
    from mtgrpo.commands._project import guard_placeholders
    from mtgrpo.commands.train import is_local_config, validate_local
    from mtgrpo.errors import UserError
    from mtgrpo.render import render_all

    local = [p for p in args.recipes if p.is_file() and is_local_config(p)]
    recipes = [p for p in args.recipes if p not in local]
    problems, lines = [], []
    for path in local:  # every file's problems in one run, recipes' too
        try:
            lines.append(validate_local(path))
        except UserError as err:
            problems += err.problems
    if recipes or not local:
        paths = recipes or None
        try:
            result = guard_placeholders(args.root, paths, args.placeholders,
                                        lambda dry: render_all(args.root, write=False,
                                                               crd_dir=args.crd_dir,
                                                               recipe_paths=paths))
            lines.append(f"ok: {len(result.recipes)} recipes, {len(result.resources)} "
                         "resources valid")
        except UserError as err:
            raise UserError(problems + err.problems, notes=err.notes,
                            counted=err.counted) from None
    if problems:
        raise UserError(problems)
    print("\n".join(lines))
    return 0
