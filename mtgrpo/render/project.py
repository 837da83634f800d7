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
from mtgrpo.gitops.kustomization import KUSTOMIZATION, MANIFESTS, kustomization_text
from mtgrpo.recipes import Recipe, discover_recipes, load_recipe, relocate
from mtgrpo.render.build import Resource, build_resources
from mtgrpo.render.keymap import to_recipe_keys
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

    Raises ``UserError`` with every problem found (schema, validation rules, CRD and SageMaker
    service model checks, duplicate names) before writing anything. ``recipe_paths`` limits
    validation to some recipes (``mtgrpo validate FILE``); it cannot be combined with ``write``.
    """
    # Imported here: the validators load jsonschema and botocore's service model, which callers
    # of build_resources/training_job_for alone (the pipeline step) do not need.
    from mtgrpo.validate import check_recipe, check_resources, default_crd_dir

    root = Path(root)
    settings = load_settings(root)
    if crd_dir:
        crd_dir, given_by = Path(crd_dir), Problem("--crd-dir", "", "")
    elif settings.crd_dir:
        crd_dir, given_by = settings.crd_dir, Problem(SETTINGS_FILE, "crd_dir", "")
    else:
        crd_dir, given_by = default_crd_dir(), Problem("$MTGRPO_CRD_DIR", "", "")
    if not Path(crd_dir).is_dir():
        raise UserError(Problem(given_by.file, given_by.key, f"CRD directory not found: "
                                f"{crd_dir}", "a directory holding the ACK SageMaker CRDs"))
    if recipe_paths is not None and write:
        raise ValueError("write=True renders the whole project; do not pass recipe_paths")
    paths = discover_recipes(settings.recipes_dir) if recipe_paths is None else recipe_paths
    if recipe_paths is None and not paths:
        raise UserError(Problem("recipes/", "", "no recipes found",
                                "recipes/*.yaml (files starting with _ are not recipes)"))
    problems: list[Problem] = []
    recipes: list[Recipe] = []
    resources: list[Resource] = []
    names: dict[str, str] = {}
    for path in paths:
        try:
            recipe = load_recipe(path, root=root)
        except UserError as err:
            problems += err.problems
            continue
        recipes.append(recipe)
        if recipe.name in names:
            problems.append(Problem(recipe.source, "name", f"{recipe.name!r} is already the "
                                    f"name of {names[recipe.name]}", "a unique name per recipe"))
            continue
        names[recipe.name] = recipe.source
        found = relocate(check_recipe(recipe.data, source=recipe.source), recipe)
        found += _render_rules(recipe, settings)
        found += relocate(_task_paths(recipe, root), recipe)
        if found:
            problems += found
            continue
        built = build_resources(recipe, settings)
        found = to_recipe_keys(check_resources([r.body for r in built], source=recipe.source,
                                               crd_dir=crd_dir), recipe)
        problems += found
        if not found:
            resources += built
    if problems:
        raise UserError(sorted(set(problems), key=lambda p: (p.file, p.key, p.message)))
    owners: dict[str, Resource] = {}
    for resource in resources:
        other = owners.setdefault(resource.filename, resource)
        if other is not resource:  # only a hash collision or a template ignoring the name
            problems.append(Problem(resource.source, "name", f"renders {resource.filename}, "
                                    f"as {other.source} does", "one file per resource"))
    if problems:
        raise UserError(problems)
    resources.sort(key=lambda r: r.filename)
    files = {f"{MANIFESTS}/{r.filename}": r.text for r in resources}
    files[KUSTOMIZATION] = kustomization_text(r.filename for r in resources)
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
    image = recipe.job["image_uri"]
    if settings.require_image_digest and not DIGEST.search(image):
        problems.append(Problem(recipe.where("job.image_uri"), "job.image_uri",
                                f"image {image!r} is not pinned by digest "
                                "(require_image_digest in recipes/_project.yaml)",
                                "<registry>/<repository>@sha256:<64 hex digits>"))
    return problems
