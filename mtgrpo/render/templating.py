"""The Jinja2 environment: templates from ``<root>/templates``, else the packaged copies.

Values enter templates only through the ``json`` filter (``tojson`` is the same filter), and
never as text: the filter leaves a quoted placeholder token and keeps the value aside; after the
template's YAML is parsed, each token is replaced by its value. So no string (quotes, colons,
newlines, ``{{``, ``1e-06``) can change the document's structure or be re-typed by a YAML
parser, and only the template's own few lines are parsed, which keeps a render fast.
Undefined variables are errors.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import jinja2

from mtgrpo.errors import Problem, UserError

PACKAGED_TEMPLATES = Path(__file__).parent / "templates"
TEMPLATES = {"TrainingJob": "trainingjob.yaml.j2",
             "HyperParameterTuningJob": "hyperparametertuningjob.yaml.j2"}
_VALUES = "_mtgrpo_values"
_TOKEN = re.compile(r"@@mtgrpo-value-([0-9]+)@@")


@jinja2.pass_context
def json_filter(context: Any, value: Any) -> str:
    """Stand-in for ``value`` in the template's YAML (a quoted token), replaced after parsing."""
    values = context[_VALUES]
    values.append(value)
    return f'"@@mtgrpo-value-{len(values) - 1}@@"'


@functools.lru_cache(maxsize=8)
def environment(templates_dir: Path | None) -> jinja2.Environment:
    search = [str(templates_dir)] if templates_dir and templates_dir.is_dir() else []
    search.append(str(PACKAGED_TEMPLATES))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(search),
                             undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True)
    env.filters["json"] = json_filter
    env.filters["tojson"] = json_filter
    return env


def render_template(kind: str, templates_dir: Path | None, context: dict) -> tuple[str, list]:
    """The template's text (values as tokens) and the values the tokens stand for."""
    values: list = []
    text = environment(templates_dir).get_template(TEMPLATES[kind]).render(
        **context, **{_VALUES: values})
    return text, values


def fill_values(node: Any, values: list, *, source: str, path: str = "") -> Any:
    """Replace every token in the parsed template by (a copy of) its value."""
    if isinstance(node, dict):
        return {fill_values(k, values, source=source, path=path):
                fill_values(v, values, source=source, path=f"{path}.{k}" if path else str(k))
                for k, v in node.items()}
    if isinstance(node, list):
        return [fill_values(v, values, source=source, path=f"{path}[{i}]")
                for i, v in enumerate(node)]
    if isinstance(node, str) and "@@mtgrpo-value-" in node:
        match = _TOKEN.fullmatch(node)
        if match is None:
            raise UserError(Problem(source, path, "a `| json` value is part of a longer string",
                                    "`key: {{ value | json }}`: the filter gives a whole "
                                    "value; build strings in the recipe, not the template"))
        return _copy(values[int(match.group(1))])
    return node


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value
