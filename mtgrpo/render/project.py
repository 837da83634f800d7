"""``render_all``: the one function behind ``mtgrpo render``, ``validate``, ``diff`` and the
golden test. It loads every recipe, validates everything, and only then (``write=True``)
writes ``manifests/`` and ``kustomization.yaml``: any problem anywhere means nothing is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mtgrpo.errors import Problem, UserError
from mtgrpo.gitops.files import write_tree
from mtgrpo.gitops.kustomization import (KUSTOMIZATION, MANIFESTS, backend_kustomization_text,
                                         kustomization_text)
from mtgrpo import backends
from mtgrpo.recipes import Recipe, discover_recipes, read_recipe, relocate
from mtgrpo.render.objects import Resource
from mtgrpo.render.settings import SETTINGS_FILE, Settings, load_settings

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


@dataclass
class RenderResult:
    root: Path
    settings: Settings
    recipes: list[Recipe]
    resources: list[Resource]
    files: dict[str, str]  # path relative to root -> expected text
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def render_all(root: Path | str, *, write: bool, crd_dir: Path | None = None,
               recipe_paths: list[Path] | None = None) -> RenderResult:
    """Render (and with ``write``, write) every recipe under ``root/recipes``.

    Every problem of every recipe in one pass: settings, reading and merging, the schema, the
    rules between values, the templates, and the CRD and SageMaker service model checks of what
    they render. A stage that needs an earlier one (rendering needs a recipe that passed the
    schema and valid settings) is skipped for that recipe, and a note says so once. Raises
    ``UserError`` (sorted by file and key, counted) before writing anything. ``recipe_paths``
    limits validation to some recipes (``mtgrpo validate FILE``); it cannot be combined with
    ``write``.
    """
    # Imported here: the validators load jsonschema and botocore's service model, which callers
    # of build_resources/training_job_for alone (the pipeline step) do not need.
    from mtgrpo.validate import check_recipe, default_crd_dir

    if recipe_paths is not None and write:
        raise ValueError("write=True renders the whole project; do not pass recipe_paths")
    root = Path(root)
    problems: list[Problem] = []
    can_render = True
    try:
        settings = load_settings(root)
    except UserError as err:
        problems += err.problems
        settings, can_render = Settings(root=root), False
    if crd_dir:
        crd_dir, given_by = Path(crd_dir), Problem("--crd-dir", "", "")
    elif settings.crd_dir:
        crd_dir, given_by = settings.crd_dir, Problem(SETTINGS_FILE, "crd_dir", "")
    else:
        crd_dir, given_by = default_crd_dir(), Problem("$MTGRPO_CRD_DIR", "", "")
    can_check = Path(crd_dir).is_dir()
    if not can_check:
        problems.append(Problem(given_by.file, given_by.key, f"CRD directory not found: "
                                f"{crd_dir}", "a directory holding the ACK SageMaker CRDs"))
    paths = discover_recipes(settings.recipes_dir) if recipe_paths is None else recipe_paths
    if recipe_paths is None and not paths:
        problems.append(Problem("recipes/", "", "no recipes found",
                                "recipes/*.yaml (files starting with _ are not recipes)"))
    recipes: list[Recipe] = []
    resources: list[Resource] = []
    names: dict[str, str] = {}
    skipped: list[str] = []
    for path in paths:
        recipe = read_recipe(path, root=root)
        found = list(recipe.problems)
        if recipe.name in names:
            found.append(Problem(recipe.source, "name", f"{recipe.name!r} is already the "
                                 f"name of {names[recipe.name]}", "a unique name per recipe"))
        elif recipe.name:
            names[recipe.name] = recipe.source
        backend = backends.of(recipe) if recipe.backend else None
        if backend is not None and (recipe.job or recipe.trainer is not None):
            # read and merged: the rules can run
            found += check_recipe(recipe)
            found += _render_rules(recipe, settings)
            found += relocate(_task_paths(recipe, root), recipe)
        problems += found
        if backend is None or not recipe.complete or not can_render:
            skipped.append(recipe.source)
            continue
        recipes.append(recipe)
        try:
            built = backend.render(recipe, settings)
        except UserError as err:  # a template's problem, named by template file and line
            problems += err.problems
            continue
        if not can_check:
            resources += built if not found else []
            continue
        try:
            checked = backend.check_resources(built, recipe, crd_dir=Path(crd_dir), root=root,
                                              found=found)
        except UserError as err:  # the CRD directory itself is unreadable: say it once
            problems += err.problems
            can_check = False
            continue
        # One line per mistake: a value the rules already named is not named again.
        named = {(p.file, p.key) for p in found}
        problems += [p for p in checked if (p.file, p.key) not in named]
        if not found and not checked:
            resources += built
    if problems:
        notes = []
        if skipped:
            notes.append(f"not rendered, so their resources were not checked: "
                         f"{', '.join(skipped)} (fix the problems above first)")
        raise UserError(sorted(set(problems), key=lambda p: (p.file, p.key, p.message)),
                        notes=notes, counted=True)
    owners: dict[str, Resource] = {}
    for resource in resources:
        other = owners.setdefault(resource.path, resource)
        if other is not resource:  # only a hash collision or a template ignoring the name
            problems.append(Problem(resource.source, "name", f"renders {resource.filename}, "
                                    f"as {other.source} does", "one file per resource"))
    if problems:
        raise UserError(problems, counted=True)
    resources.sort(key=lambda r: r.path)
    files = {f"{MANIFESTS}/{r.path}": r.text for r in resources}
    # manifests/<backend>/ per backend, and the top level lists the enabled ones
    rendered = [name for name in backends.names() if any(r.backend == name for r in resources)]
    for name in rendered:
        files[f"{MANIFESTS}/{name}/{KUSTOMIZATION}"] = backend_kustomization_text(
            r.filename for r in resources if r.backend == name)
    enabled = settings.backends or tuple(rendered)
    files[KUSTOMIZATION] = kustomization_text(name for name in backends.names()
                                              if name in enabled and name in rendered)
    result = RenderResult(root=root, settings=settings, recipes=recipes, resources=resources,
                          files=files)
    if write:
        result.written, result.removed = write_tree(root, files)
    return result


def _task_paths(recipe: Recipe, root: Path) -> list[Problem]:
    """The ``task_*`` plug-in paths whose package is in this repository must exist there."""
    from mtgrpo.contract.task_paths import check_task_paths

    trainer = recipe.data.get("trainer")
    if not isinstance(trainer, dict):
        return []
    return check_task_paths(trainer, root, recipe.source)


def _render_rules(recipe: Recipe, settings: Settings) -> list[Problem]:
    """Rules about how a recipe renders (:mod:`mtgrpo.validate` owns the SageMaker rules)."""
    problems = []
    image = recipe.job.get("image_uri")
    if settings.require_image_digest and isinstance(image, str) and not DIGEST.search(image):
        problems.append(Problem(recipe.where("job.image_uri"), "job.image_uri",
                                f"image {image!r} is not pinned by digest "
                                "(require_image_digest in recipes/_project.yaml)",
                                "<registry>/<repository>@sha256:<64 hex digits>"))
    return problems
