"""``mtgrpo plan``: will each recipe run and fit on its nodes, and what may it cost? Every
backend names its hardware (an instance type or a GPU model); the cluster's own nodes are not
priced."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipes", nargs="*", type=Path, metavar="RECIPE",
                        help="recipe files (default: every recipe under recipes/)")
    parser.add_argument("--root", type=Path, default=Path("."),
                        help="repository root holding recipes/ (default: the current directory)")
    parser.add_argument("--output", choices=("table", "json"), default="table",
                        help="table (default) or json")
    parser.add_argument("--prices", type=Path, default=None, metavar="FILE",
                        help="a JSON price file (the layout of mtgrpo/plan/prices.json) whose "
                             "rows replace the shipped ones, e.g. negotiated rates")
    parser.add_argument("--model-dir", type=Path, default=None, metavar="DIR",
                        help="a local copy of the model (its config.json gives the shape)")
    from mtgrpo.commands._project import add_placeholder_argument

    add_placeholder_argument(parser)


def run(args: argparse.Namespace) -> int:
    from mtgrpo.errors import Problem, UserError
    from mtgrpo.plan.check import problems_of
    from mtgrpo.plan.cost import load_prices
    from mtgrpo.plan.planner import plan_recipe
    from mtgrpo.plan.report import as_json, table
    from mtgrpo.recipes import discover_recipes, load_recipe
    from mtgrpo.render.settings import load_settings

    prices = load_prices(args.prices)
    paths = list(args.recipes) or discover_recipes(load_settings(args.root).recipes_dir)
    if not paths:
        raise UserError(Problem("recipes/", "", "no recipes found", "recipes/*.yaml"))
    recipes, problems = [], []
    for path in paths:
        try:
            recipes.append(load_recipe(path, root=args.root if not args.recipes else None))
        except UserError as err:
            problems += err.problems
    from mtgrpo.commands._project import placeholder_mode
    from mtgrpo.validate.placeholders import find_all, warn

    placeholders = find_all(recipes)
    if placeholder_mode(args.root, args.placeholders) == "error":
        problems += placeholders
    if problems:
        raise UserError(sorted(problems) if placeholders else problems)
    warn(placeholders)
    from mtgrpo import backends

    results = []
    for recipe in recipes:
        hardware = backends.of(recipe).hardware(recipe)
        if hardware.unknown:  # e.g. a cluster recipe that names no node type or GPU model
            print(f"{recipe.name}  ({recipe.source}): not planned: {hardware.unknown}",
                  file=sys.stderr)
            continue
        plan = plan_recipe(recipe, model_dir=args.model_dir, prices=prices, root=args.root)
        results.append((plan, problems_of(plan, recipe)))
    if args.output == "json":
        print(json.dumps([as_json(p, found) for p, found in results], indent=2,
                         sort_keys=True))
    else:
        print("\n\n".join(table(p, found) for p, found in results))
    return 1 if any(found for _, found in results) else 0
