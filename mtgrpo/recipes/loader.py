"""Load a recipe: read YAML, resolve ``extends`` (deep merge, later wins), check the schema.

Each merged value remembers which file set it, so a problem in a value inherited from a base
file names that base file, not the recipe.
"""

from __future__ import annotations

import errno
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
    """One recipe, read once: merged, schema-checked, typed, every default filled in.

    ``data`` is the merged recipe as its files spell it (``extends`` resolved and removed, null
    values dropped). ``values`` is the checked top level with defaults (``name``,
    ``description``, and any top-level key a later schema adds); ``job`` and ``tuning`` are the
    checked sections with every default filled in (``inputs`` as option mappings, ``tags`` as
    the SDK's ``[{Key, Value}]`` list): what the rules and templates read. ``trainer`` is typed.

    A recipe with ``problems`` is partial: values that failed the schema are left out (no
    default stands in for them) and ``trainer`` may be None. :func:`load_recipe` never returns
    one; :func:`read_recipe` and :func:`recipe_from_data` do, so every later check can still run.
    """

    name: str
    source: str
    path: Path
    data: dict
    trainer: TrainerConfig
    job: dict
    tuning: dict | None
    provenance: dict = field(default_factory=dict, repr=False, compare=False)
    values: dict = field(default_factory=dict, repr=False, compare=False)
    problems: tuple = field(default=(), repr=False, compare=False)
    # The registered backend that serves it (mtgrpo/backends/all.py), and that backend's own
    # checked section (``kubeflow:``), defaults filled in; None for a backend without one.
    backend: str = ""
    section: dict | None = None

    @property
    def complete(self) -> bool:
        """Whether the recipe passed the schema (and can be rendered)."""
        return not self.problems

    def where(self, key: str) -> str:
        """The file (relative to the repo root) that set ``key``, e.g. ``job.role``."""
        return _where(self.provenance, key, self.source)

    def invalid(self, key: str) -> bool:
        """Whether ``key`` (or a key above or below it) failed the schema."""
        return any(_related(p.key, key) for p in self.problems)


def discover_recipes(recipes_dir: Path) -> list[Path]:
    """Recipe files directly in ``recipes_dir``, sorted. Subdirectories (``base/``, ``local/``)
    and files starting with ``_`` or ``.`` (``_project.yaml``) are not recipes."""
    recipes_dir = Path(recipes_dir)
    if not recipes_dir.is_dir():
        return []
    # Every entry named like a recipe: one that is not a regular file (a dangling or outward
    # link, a directory, a FIFO) is reported by read_recipe, not skipped.
    return sorted(p for p in recipes_dir.iterdir()
                  if p.suffix in RECIPE_SUFFIXES and p.name[0] not in "_.")


def find_root(path: Path) -> Path:
    """The repository root for ``path``: the directory holding the ``recipes/`` it lives in."""
    path = Path(os.path.abspath(path))
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
    recipe = read_recipe(path, root=root)
    if recipe.problems:
        raise UserError(list(recipe.problems))
    return recipe


def read_recipe(path: Path | str, *, root: Path | str | None = None) -> Recipe:
    """Read and merge one recipe file and build its typed model; never raises for the
    recipe's own mistakes, which are in ``.problems`` (sorted by file and key)."""
    path = Path(path)
    root = Path(root) if root is not None else find_root(path)
    source = relative(path, root)
    provenance: dict[str, str] = {}
    problems: list[Problem] = []
    merged = _load_merged(path, root_of(root), source, provenance, (), problems)
    if problems:
        return _unread(source, path, problems)
    return recipe_from_data(merged, source=source, path=path, provenance=provenance)


def recipe_from_data(data: Any, *, source: str, path: Path | str | None = None,
                     provenance: Mapping[str, str] | None = None) -> Recipe:
    """The typed recipe for already merged data (in memory: no files are read).

    Null values unset keys (the schema default applies again); ``extends`` must already be
    resolved. Never raises for mistakes in ``data``: see ``Recipe.problems``.
    """
    provenance = dict(provenance or {})
    path = Path(path) if path is not None else Path(source)
    if not isinstance(data, Mapping):
        return _unread(source, path, [Problem(source, "", f"must be a mapping, got "
                                              f"{schema._type_name(data)}", _WHAT)])
    data = _without_nulls(dict(data))
    checker = schema.Checker(lambda key: _where(provenance, key, source))
    top = checker.section(data, top_keys(), "", "recipe keys")
    tuning = None
    if isinstance(top.get("tuning"), Mapping):
        tuning = checker.section(top["tuning"], schema.TUNING, "tuning", "tuning keys")
    from mtgrpo import backends

    name = top.get("backend") or backends.default_name()
    section = None
    if any(p.key == "backend" for p in checker.problems):
        job = {}  # which job keys apply is unknown: report the backend alone
    else:
        backend = backends.get(name)
        job = backend.check_job(checker, top["job"]) if "job" in top else {}
        section = backend.check_section(checker, top.get(backend.section or ""))
        for other, owner in backends.section_owners().items():
            if owner is not backend and top.get(other) is not None:
                checker.problem(other, f"only used with backend: {owner.name}",
                                f"backend: {owner.name}, or remove the section")
    trainer = None
    if isinstance(top.get("trainer"), Mapping):
        try:
            trainer = TrainerConfig.from_mapping(top["trainer"], source=source,
                                                 key_prefix="trainer")
        except UserError as err:
            checker.problems += [_relocate(p, provenance, source) for p in err.problems]
    values = {k: v for k, v in top.items() if k not in ("trainer", "job", "tuning", "extends")}
    return Recipe(name=top.get("name", ""), source=source, path=path, data=data,
                  trainer=trainer, job=job, tuning=tuning, provenance=provenance, values=values,
                  problems=tuple(sorted(set(checker.problems), key=_order)), backend=name,
                  section=section)


def top_keys() -> dict[str, schema.Key]:
    """The recipe's top-level keys: the shared ones, ``backend`` with the registered backends
    as its choices, and each backend's own section."""
    from dataclasses import replace

    from mtgrpo import backends

    keys = dict(schema.TOP)
    keys["backend"] = replace(schema.TOP["backend"], choices=backends.names(),
                              default=backends.default_name())
    for name, owner in backends.section_owners().items():
        keys[name] = owner.section_key or schema.Key(
            "mapping", f"Settings of backend {owner.name} only.", default=None)
    return keys


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


_WHAT = "a recipe: name, extends, trainer, job, tuning"


def _unread(source: str, path: Path, problems: list[Problem]) -> Recipe:
    return Recipe(name="", source=source, path=path, data={}, trainer=None,  # type: ignore
                  job={}, tuning=None, problems=tuple(sorted(set(problems), key=_order)))


def _related(a: str, b: str) -> bool:
    a, b = a.split("[", 1)[0], b.split("[", 1)[0]
    return bool(a) and bool(b) and (a == b or a.startswith(b + ".") or b.startswith(a + "."))


def root_of(root: Path) -> Path:
    """``root`` resolved (symlinks followed), or made absolute if it cannot be."""
    try:
        return root.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(root))


def resolve_inside(path: Path, root: Path) -> tuple[Path | None, str]:
    """``path`` with every symlink followed, if it is a regular file inside ``root`` (a
    resolved path); else None and why not ("file not found", "is a symlink loop", ...)."""
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        return None, "file not found"
    except RuntimeError:  # a symlink loop, before Python 3.13
        return None, "is a symlink loop"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return None, "is a symlink loop"
        return None, f"cannot be read: {err.strerror or err}"
    if real != root and root not in real.parents:
        return None, "resolves to a file outside the repository"
    if not real.is_file():
        return None, "is not a regular file"
    return real, ""


def _load_merged(path: Path, root: Path, source: str, provenance: dict[str, str],
                 chain: tuple[Path, ...], problems: list[Problem]) -> dict:
    """The merged mapping of ``path`` and its bases; read problems go to ``problems``."""
    real, why = resolve_inside(path, root)
    if real is None:
        problems.append(Problem(source, "", why, "a YAML file inside the repository "
                                f"{root.as_posix()}"))
        return {}
    try:
        doc = _read(real, source)
    except UserError as err:
        problems.extend(err.problems)
        return {}
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        problems.append(Problem(source, "", f"must be a mapping, got {schema._type_name(doc)}",
                                _WHAT))
        return {}
    bases = doc.get("extends")
    bases = [] if bases is None else [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        problems.append(Problem(source, "extends", "must be a path or a list of paths",
                                "paths relative to this file"))
        bases = []
    folder = Path(source).parent.as_posix()
    allowed = f"a path relative to {folder}/"
    merged: dict = {}
    for base in bases:
        if os.path.isabs(base) or base.startswith("~"):
            problems.append(Problem(source, "extends", f"{base!r} is an absolute path",
                                    allowed + ", inside the repository"))
            continue
        base_path = path.parent / base
        base_real, why = resolve_inside(base_path, root)
        if base_real is None:
            problems.append(Problem(source, "extends", f"{base!r} {why}" if why !=
                                    "file not found" else f"file not found: {base!r}",
                                    allowed + ("" if why == "file not found"
                                               else ", inside the repository")))
            continue
        if base_real in chain or base_real == real:
            problems.append(Problem(source, "extends",
                                    f"{base!r} leads back to this file (a cycle)",
                                    "a chain of base files without cycles"))
            continue
        base_doc = _load_merged(base_path, root, relative(base_real, root), provenance,
                                chain + (real,), problems)
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
    """Drop null values from mappings: a null in a recipe unsets what a base file set (so the
    schema default applies again, or a required value is missing)."""
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
