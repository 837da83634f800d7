"""Arguments shared by render, validate, diff and plan, and the placeholder guard they share."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, TypeVar

from mtgrpo.errors import Problem, UserError

T = TypeVar("T")


def add_project_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="repository root holding recipes/, templates/ and manifests/ "
                             "(default: the current directory)")
    parser.add_argument("--crd-dir", type=Path, default=None,
                        help="directory with the ACK SageMaker CRDs to validate against "
                             "(default: crd_dir in recipes/_project.yaml, $MTGRPO_CRD_DIR, "
                             "or the copy shipped with mtgrpo)")
    add_placeholder_argument(parser)


def add_placeholder_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--placeholders", choices=("warn", "error"), default=None,
                        help="example values left in recipes (account 111122223333, "
                             "amzn-s3-demo-bucket, the all-zero image digest): warn, or error "
                             "(for CI; default: placeholders in recipes/_project.yaml, else warn)")


def placeholder_mode(root: Path, mode: str | None) -> str:
    """``--placeholders``, else the project setting, else warn."""
    from mtgrpo.render.settings import load_settings

    return mode or load_settings(root).placeholders


def _placeholders(root: Path, recipe_paths: list[Path] | None,
                  mode: str | None) -> tuple[str, list[Problem]]:
    from mtgrpo.recipes import discover_recipes, read_recipe
    from mtgrpo.render.settings import load_settings
    from mtgrpo.validate.placeholders import find_all

    try:
        settings = load_settings(root)
    except UserError:
        return mode or "warn", []  # the command's own run reports the settings file
    paths = recipe_paths or discover_recipes(settings.recipes_dir)
    recipes = []
    for path in paths:
        try:
            recipes.append(read_recipe(path, root=None if recipe_paths else root))
        except UserError:
            continue  # an unreadable recipe: the command's own run reports it
    return mode or settings.placeholders, find_all(recipes)


def guard_placeholders(root: Path, recipe_paths: list[Path] | None, mode: str | None,
                       run: Callable[[bool], T]) -> T:
    """``run(dry)`` with the recipes' placeholders warned about, or with ``error`` refused
    together with every other problem (``run(True)`` collects those and writes nothing)."""
    from mtgrpo.validate.placeholders import warn

    mode, found = _placeholders(root, recipe_paths, mode)
    if mode == "error" and found:
        try:
            run(True)
        except UserError as err:
            raise UserError(sorted(found + err.problems), notes=err.notes,
                            counted=True) from None
        raise UserError(found, counted=True)
    result = run(False)
    warn(found)  # after a clean run: with errors, those come first and alone
    return result
