"""Backends as plug-ins: the :class:`Backend` protocol and the one registry table.

:data:`mtgrpo.backends.all.BACKENDS` maps a recipe's ``backend:`` value to the object that
renders, validates, plans and operates its jobs (docs/architecture.md). The helpers here are
what the shared commands call; they never name a backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtgrpo.backends.protocol import OPTIONAL_COMMANDS, Backend, Hardware, Target
from mtgrpo.errors import Problem, UserError

if TYPE_CHECKING:
    from mtgrpo.recipes import Recipe


def registry() -> dict[str, Backend]:
    """The table (imported on first use: the backends import the shared code)."""
    from mtgrpo.backends.all import BACKENDS

    return BACKENDS


def names() -> tuple[str, ...]:
    return tuple(registry())


def default_name() -> str:
    return next(iter(registry()))


def get(name: str) -> Backend:
    """The backend called ``name`` (a recipe's ``backend:`` value, already schema-checked)."""
    try:
        return registry()[name]
    except KeyError:
        raise UserError(Problem("", "backend", f"unknown backend {name!r}",
                                "one of " + ", ".join(names()))) from None


def of(recipe: "Recipe") -> Backend:
    """The backend that serves ``recipe``."""
    return get(recipe.backend)


def require(recipe: "Recipe", command: str) -> Backend:
    """The recipe's backend if it serves the optional ``command``; else one line saying which
    backends do."""
    assert command in OPTIONAL_COMMANDS, command
    backend = of(recipe)
    if command not in backend.commands:
        serving = [b.name for b in registry().values() if command in b.commands]
        raise UserError(Problem(recipe.where("backend"), "backend",
                                f"{OPTIONAL_COMMANDS[command]} is not available for backend "
                                f"{backend.name} ({backend.title})",
                                "a recipe with backend: " + " or ".join(serving)
                                if serving else "no backend serves it"))
    return backend


def for_selector(selector: str) -> Backend | None:
    """The backend whose selector prefix ``selector`` starts with (``trainjob/NAME``)."""
    lowered = selector.lower()
    for backend in registry().values():
        if any(lowered.startswith(p) for p in backend.selector_prefixes):
            return backend
    return None


def route(selector: str) -> Backend:
    """The backend that answers an operate selector: a recipe file's backend, the backend whose
    prefix it carries (``trainjob/NAME``), else the first that looks bare job names up."""
    from pathlib import Path

    path = Path(selector)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        from mtgrpo.recipes import load_recipe

        return of(load_recipe(path))
    found = for_selector(selector)
    if found is not None:
        return found
    return next(b for b in registry().values() if b.bare_names)


def section_owners() -> dict[str, Backend]:
    """Top-level recipe section -> the backend that owns it."""
    return {b.section: b for b in registry().values() if b.section}


__all__ = ["Backend", "Hardware", "OPTIONAL_COMMANDS", "Target", "default_name", "for_selector",
           "get", "names", "of", "registry", "require", "route", "section_owners"]
