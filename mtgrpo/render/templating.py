"""The Jinja2 environment: templates from ``<root>/templates``, else the packaged copies.

Values enter templates only through the ``json`` filter (``tojson`` is the same filter): JSON is
valid YAML, so any string (quotes, colons, newlines, ``{{``) arrives as data and can never
change the document's structure. Undefined variables are errors.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jinja2

PACKAGED_TEMPLATES = Path(__file__).parent / "templates"
TEMPLATES = {"TrainingJob": "trainingjob.yaml.j2",
             "HyperParameterTuningJob": "hyperparametertuningjob.yaml.j2"}


def json_filter(value: Any) -> str:
    """A value as JSON (one line, keys sorted, unicode kept): safe to place anywhere in YAML."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)


@functools.lru_cache(maxsize=8)
def environment(templates_dir: Path | None) -> jinja2.Environment:
    search = [str(templates_dir)] if templates_dir and templates_dir.is_dir() else []
    search.append(str(PACKAGED_TEMPLATES))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(search),
                             undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True, trim_blocks=False)
    env.filters["json"] = json_filter
    env.filters["tojson"] = json_filter
    return env


def render_template(kind: str, templates_dir: Path | None, context: dict) -> str:
    return environment(templates_dir).get_template(TEMPLATES[kind]).render(**context)
