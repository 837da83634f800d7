"""Rendering: recipe -> the objects of its backend, named by content hash, emitted canonically.

Public API: :func:`load_settings`, :func:`build_resources` (any backend, through the registry
in :mod:`mtgrpo.backends`), :func:`training_job_for` (backends serving ``tuned-training-job``),
:func:`render_all`, :class:`Resource`, :class:`RenderResult`; names in :mod:`.naming`; the
shared template -> object step in :mod:`.objects`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from mtgrpo.render.naming import job_name
from mtgrpo.render.objects import RECIPE_LABEL, SOURCE_ANNOTATION, Resource
from mtgrpo.render.project import RenderResult, render_all
from mtgrpo.render.settings import Settings, load_settings

if TYPE_CHECKING:
    from mtgrpo.recipes import Recipe


def build_resources(recipe: "Recipe", settings: Settings) -> list[Resource]:
    """The objects ``recipe`` renders to, by its backend."""
    from mtgrpo import backends

    return backends.of(recipe).render(recipe, settings)


def training_job_for(recipe: "Recipe", settings: Settings,
                     hyperparameter_overrides: Mapping[str, str]) -> Resource:
    """The recipe's training job with some hyperparameters replaced (a tuning job's best
    trial); refused in one line for a backend that does not serve it."""
    from mtgrpo import backends

    backend = backends.require(recipe, "tuned-training-job")
    return backend.training_job_for(recipe, settings, hyperparameter_overrides)  # type: ignore[attr-defined]


__all__ = ["Resource", "RenderResult", "Settings", "build_resources", "job_name",
           "load_settings", "render_all", "training_job_for", "RECIPE_LABEL",
           "SOURCE_ANNOTATION"]
