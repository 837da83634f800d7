"""Rendering: recipe -> ACK SageMaker resources, named by content hash, emitted canonically.

Public API: :func:`load_settings`, :func:`build_resources`, :func:`training_job_for`,
:func:`render_all`, :class:`Resource`, :class:`RenderResult`; names in :mod:`.naming`.
"""

from mtgrpo.render.build import (DELETION_POLICY_ANNOTATION, RECIPE_LABEL, REGION_ANNOTATION,
                                 SOURCE_ANNOTATION, Resource, build_resources, training_job_for)
from mtgrpo.render.naming import job_name
from mtgrpo.render.project import RenderResult, render_all
from mtgrpo.render.settings import Settings, load_settings

__all__ = ["Resource", "RenderResult", "Settings", "build_resources", "job_name",
           "load_settings", "render_all", "training_job_for", "RECIPE_LABEL",
           "SOURCE_ANNOTATION", "REGION_ANNOTATION", "DELETION_POLICY_ANNOTATION"]
