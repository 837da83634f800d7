"""Reading a ``backend: hyperpod`` recipe into the shared :class:`mtgrpo.recipes.Recipe`.

INTERIM HOOK, until the backend registry lets the shared loader hand a backend its own
sections: the shared loader's reader merges the files (``extends``, provenance); this module
checks the top level with ``backend: hyperpod`` allowed, ``job:`` with :func:`schema.check_job`,
the ``hyperpod:`` section with :func:`schema.check_section` (kept in ``recipe.values``), and
the ``trainer:`` section with the trainer's own schema, exactly as the shared loader does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from mtgrpo.contract import TrainerConfig
from mtgrpo.errors import Problem, UserError
from mtgrpo.hyperpod import schema as hs
from mtgrpo.recipes import loader
from mtgrpo.recipes import schema
from mtgrpo.recipes.loader import Recipe

TOP = dict(schema.TOP)
TOP["backend"] = dataclasses.replace(schema.TOP["backend"],
                                     choices=tuple(schema.TOP["backend"].choices) + (hs.BACKEND,))
TOP["hyperpod"] = schema.Key("mapping", "HyperPod-only settings (backend: hyperpod; "
                                        "docs/hyperpod.md).", default=None)


def is_hyperpod(data: Any) -> bool:
    return isinstance(data, Mapping) and data.get("backend") == hs.BACKEND


def read_recipe(path: Path | str, *, root: Path | str | None = None) -> Recipe:
    """As :func:`mtgrpo.recipes.read_recipe`, for a ``backend: hyperpod`` recipe file."""
    path = Path(path)
    root = Path(root) if root is not None else loader.find_root(path)
    source = loader.relative(path, root)
    provenance: dict[str, str] = {}
    problems: list[Problem] = []
    merged = loader._load_merged(path, loader.root_of(root), source, provenance, (), problems)
    if problems:
        return loader._unread(source, path, problems)
    return recipe_from_data(merged, source=source, path=path, provenance=provenance)


def load_recipe(path: Path | str, *, root: Path | str | None = None) -> Recipe:
    recipe = read_recipe(path, root=root)
    if recipe.problems:
        raise UserError(list(recipe.problems))
    return recipe


def recipe_from_data(data: Any, *, source: str, path: Path | str | None = None,
                     provenance: Mapping[str, str] | None = None) -> Recipe:
    """The typed recipe for merged data; mistakes go to ``Recipe.problems``."""
    provenance = dict(provenance or {})
    path = Path(path) if path is not None else Path(source)
    if not isinstance(data, Mapping):
        return loader._unread(source, path, [Problem(source, "", "must be a mapping",
                                                     "recipe keys")])
    data = loader._without_nulls(dict(data))
    checker = schema.Checker(lambda key: loader._where(provenance, key, source))
    top = checker.section(data, TOP, "", "recipe keys")
    tuning = None
    if top.get("tuning") is not None:
        checker.problem("tuning", "hyperparameter tuning is not rendered for backend hyperpod",
                        "backend sagemaker or kubeflow for tuning, then a hyperpod recipe "
                        "with the chosen values")
    if top.get("kubeflow") is not None:
        checker.problem("kubeflow", "only used with backend: kubeflow",
                        "the hyperpod: section, or remove it")
    job = hs.check_job(checker, top["job"]) if "job" in top else {}
    section = hs.check_section(checker, top.get("hyperpod"))
    trainer = None
    if isinstance(top.get("trainer"), Mapping):
        try:
            trainer = TrainerConfig.from_mapping(top["trainer"], source=source,
                                                 key_prefix="trainer")
        except UserError as err:
            checker.problems += loader.relocate(err.problems, _stub(source, path, provenance))
    values = {k: v for k, v in top.items() if k not in ("trainer", "job", "tuning", "extends")}
    values["hyperpod"] = section
    return Recipe(name=top.get("name", ""), source=source, path=path, data=data,
                  trainer=trainer, job=job, tuning=tuning, provenance=provenance,
                  values=values, problems=tuple(sorted(set(checker.problems),
                                                       key=loader._order)),
                  backend=hs.BACKEND)


def _stub(source: str, path: Path, provenance: dict) -> Recipe:
    return Recipe(name="", source=source, path=path, data={}, trainer=None,  # type: ignore
                  job={}, tuning=None, provenance=provenance)
