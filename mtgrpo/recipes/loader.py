"""Load a recipe: read YAML, resolve ``extends`` (deep merge, later wins), check the schema.

Each merged value remembers which file set it, so a problem in a value inherited from a base
file names that base file, not the recipe.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mtgrpo.contract import TrainerConfig
from mtgrpo.errors import Problem, UserError
from mtgrpo.recipes import schema
from mtgrpo.recipes.yamlfile import parse_yaml, read_yaml

RECIPE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Recipe:
    """A loaded, merged and schema-checked recipe.

    ``data`` is the merged recipe as its files spell it (``extends`` resolved and removed, null
    values dropped): what :func:`mtgrpo.validate.check_recipe` reads. ``job`` and ``tuning`` are
    the checked sections with every default filled in (``inputs`` as option mappings, ``tags``
    as the SDK's ``[{Key, Value}]`` list): what the templates read. ``trainer`` is typed.
    """

    name: str
    source: str
    path: Path
    data: dict
    trainer: TrainerConfig
    job: dict
    tuning: dict | None
    provenance: dict = field(default_factory=dict, repr=False, compare=False)
    # issue 17: ``backend: kubeflow`` recipes carry their checked ``kubeflow:`` section.
    backend: str = "sagemaker"
    kubeflow: dict | None = None

    def where(self, key: str) -> str:
        """The file (relative to the repo root) that set ``key``, e.g. ``job.role``."""
        return _where(self.provenance, key, self.source)


def discover_recipes(recipes_dir: Path) -> list[Path]:
    """Recipe files directly in ``recipes_dir``, sorted. Subdirectories (``base/``, ``local/``)
    and files starting with ``_`` or ``.`` (``_project.yaml``) are not recipes."""
    recipes_dir = Path(recipes_dir)
    if not recipes_dir.is_dir():
        return []
    return sorted(p for p in recipes_dir.iterdir()
                  if p.is_file() and p.suffix in RECIPE_SUFFIXES and p.name[0] not in "_.")


def find_root(path: Path) -> Path:
    """The repository root for ``path``: the directory holding the ``recipes/`` it lives in."""
    path = Path(path).resolve()
    for parent in path.parents:
        if parent.name == "recipes":
            return parent.parent
    return path.parent


def relative(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()
    except ValueError:  # another drive on Windows
        return Path(path).as_posix()


def load_recipe(path: Path | str, *, root: Path | str | None = None) -> Recipe:
    """Load, merge and schema-check one recipe; raise ``UserError`` listing every problem."""
    path = Path(path)
    root = Path(root) if root is not None else find_root(path)
    source = relative(path, root)
    provenance: dict[str, str] = {}
    merged = _load_merged(path, root, provenance, chain=())

    checker = schema.Checker(lambda key: _where(provenance, key, source))
    top = checker.section(merged, schema.TOP, "", "recipe keys")
    tuning = None
    if top.get("tuning") is not None:
        tuning = checker.section(top["tuning"], schema.TUNING, "tuning", "tuning keys")
    backend = top.get("backend", "sagemaker")
    kubeflow = None
    if any(p.key == "backend" for p in checker.problems):
        job = {}  # which job keys apply is unknown: report the backend alone
    elif backend == "kubeflow":  # issue 17: its own job keys and section
        from mtgrpo.recipes import kubeflow_schema
        job = kubeflow_schema.check_job(checker, top["job"]) if "job" in top else {}
        kubeflow = kubeflow_schema.check_section(checker, top.get("kubeflow"))
    else:
        job = checker.section(top["job"], schema.JOB, "job", "job keys") if "job" in top else {}
        if top.get("kubeflow") is not None:
            checker.problem("kubeflow", "only used with backend: kubeflow",
                            "backend: kubeflow, or remove the section")
    trainer = None
    if isinstance(top.get("trainer"), Mapping):
        try:
            trainer = TrainerConfig.from_mapping(top["trainer"], source=source,
                                                 key_prefix="trainer")
        except UserError as err:
            checker.problems += [_relocate(p, provenance, source) for p in err.problems]
    if checker.problems:
        raise UserError(sorted(set(checker.problems), key=_order))
    assert trainer is not None
    data = _without_nulls(merged)
    return Recipe(name=top["name"], source=source, path=path, data=data, trainer=trainer,
                  job=job, tuning=tuning, provenance=provenance, backend=backend,
                  kubeflow=kubeflow)


def relocate(problems: list[Problem], recipe: Recipe) -> list[Problem]:
    """Point problems reported against the recipe file at the file that set the key."""
    return [_relocate(p, recipe.provenance, recipe.source) for p in problems]


# -- internals ----------------------------------------------------------------------------------

def _order(p: Problem) -> tuple:
    return (p.file, p.key, p.message)


def _relocate(p: Problem, provenance: Mapping[str, str], source: str) -> Problem:
    if p.file != source or not p.key:
        return p
    return Problem(_where(provenance, p.key, source), p.key, p.message, p.allowed)


def _where(provenance: Mapping[str, str], key: str, default: str) -> str:
    key = key.split("[", 1)[0]
    while key:
        if key in provenance:
            return provenance[key]
        key = key.rpartition(".")[0]
    return default


def _load_merged(path: Path, root: Path, provenance: dict[str, str],
                 chain: tuple[Path, ...]) -> dict:
    source = relative(path, root)
    doc = _read(path, source)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise UserError(Problem(source, "", f"must be a mapping, got {schema._type_name(doc)}",
                                "a recipe: name, extends, trainer, job, tuning"))
    bases = doc.get("extends", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise UserError(Problem(source, "extends", "must be a path or a list of paths",
                                "paths relative to this file"))
    merged: dict = {}
    for base in bases:
        base_path = (path.parent / base).resolve()
        if base_path in chain or base_path == path.resolve():
            raise UserError(Problem(source, "extends",
                                    f"{base!r} leads back to this file (a cycle)",
                                    "a chain of base files without cycles"))
        if not base_path.is_file():
            raise UserError(Problem(source, "extends", f"file not found: {base!r}",
                                    f"a path relative to {Path(source).parent.as_posix()}/"))
        base_doc = _load_merged(base_path, root, provenance, chain + (path.resolve(),))
        merged = _merge(merged, base_doc)
    own = {k: v for k, v in doc.items() if k != "extends"}
    _record(own, "", source, provenance)
    return _merge(merged, own)


def _read(path: Path, source: str) -> Any:
    """Parsed YAML of a file; base files shared by many recipes are parsed once per content."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return read_yaml(path, source=source)  # reports the error
    return _copy(_parse_cached(text, source))


@functools.lru_cache(maxsize=256)
def _parse_cached(text: str, source: str) -> Any:
    return parse_yaml(text, source=source)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _without_nulls(value: Any) -> Any:
    """Drop null values from mappings: a null in a recipe unsets what a base file set."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None and k != "extends"}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _merge(base: Any, top: Any) -> Any:
    """Deep merge: mappings merge key by key, anything else (lists too) is replaced."""
    if isinstance(base, dict) and isinstance(top, dict):
        out = dict(base)
        for key, value in top.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return top


def _record(doc: Any, prefix: str, source: str, provenance: dict[str, str]) -> None:
    if not isinstance(doc, dict):
        return
    for key, value in doc.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if not isinstance(value, dict) and path in provenance:
            # a replaced value: forget what its old children said
            for old in [k for k in provenance if k.startswith(path + ".")]:
                del provenance[old]
        provenance[path] = source
        _record(value, path, source, provenance)
