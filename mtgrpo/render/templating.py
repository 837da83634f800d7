"""The Jinja2 environment: templates from ``<root>/templates``, else the packaged copies.

Values enter templates only through the ``json`` filter (``tojson`` is the same filter), and
never as text: the filter leaves a quoted placeholder token and keeps the value aside; after the
template's YAML is parsed, each token is replaced by its value. So no string (quotes, colons,
newlines, ``{{``, ``1e-06``) can change the document's structure or be re-typed by a YAML
parser, and only the template's own few lines are parsed, which keeps a render fast.
Undefined variables are errors. Any error a template raises (syntax, an undefined variable, a
failing expression, a byte that is not UTF-8) is a one-line problem naming the template file
and line; a template resolving outside its directory (a symlink) is not read.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import jinja2

from mtgrpo.errors import Problem, UserError

PACKAGED_TEMPLATES = Path(__file__).parent / "templates"
VALUES = "_mtgrpo_values"  # the context variable the ``json`` filter keeps values in
_JSON_TYPES = (dict, list, tuple, str, int, float, bool, type(None))
_TOKEN = re.compile(r"@@mtgrpo-value-([0-9]+)@@")


@jinja2.pass_context
def json_filter(context: Any, value: Any) -> str:
    """Stand-in for ``value`` in the template's YAML (a quoted token), replaced after parsing."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # StrictUndefined lets filters see it: refuse here
    if not isinstance(value, _JSON_TYPES):
        raise TypeError(f"`| json` cannot write a {type(value).__name__}")
    values = context[VALUES]
    values.append(value)
    return f'"@@mtgrpo-value-{len(values) - 1}@@"'


class _InsideLoader(jinja2.FileSystemLoader):
    """A FileSystemLoader that refuses a file resolving outside where it may live (a symlink
    out of the repository): the project's templates inside the project root, the packaged
    ones inside the package's directory."""

    def __init__(self, search: list[str], anchors: list[str]):
        super().__init__(search)
        self.anchors = list(zip(search, (os.path.realpath(a) for a in anchors)))

    def get_source(self, environment: jinja2.Environment, template: str) -> Any:
        for folder in self.searchpath:  # never open a FIFO or a directory in a template's place
            candidate = os.path.join(folder, *template.split("/"))
            if os.path.lexists(candidate):
                if not os.path.isfile(candidate):
                    raise jinja2.TemplateNotFound(template, f"{template} is not a regular file")
                break
        source, filename, uptodate = super().get_source(environment, template)
        real = os.path.realpath(filename)
        for folder, anchor in self.anchors:
            if filename.startswith(folder.rstrip(os.sep) + os.sep):
                if not real.startswith(anchor + os.sep):
                    raise jinja2.TemplateNotFound(
                        template, f"{template} resolves to a file outside the repository")
                break
        return source, filename, uptodate


@functools.lru_cache(maxsize=8)
def environment(templates_dir: Path | None, templates: tuple = ()) -> jinja2.Environment:
    """The Jinja2 environment: ``templates`` ((name, text) pairs held in memory) first, then
    ``templates_dir``, then the packaged copies."""
    search, anchors = [], []
    if templates_dir and templates_dir.is_dir():
        search.append(str(templates_dir))
        anchors.append(str(Path(templates_dir).parent))  # the project root
    search.append(str(PACKAGED_TEMPLATES))
    anchors.append(str(PACKAGED_TEMPLATES))
    loader: jinja2.BaseLoader = _InsideLoader(search, anchors)
    if templates:
        loader = jinja2.ChoiceLoader([jinja2.DictLoader(dict(templates)), loader])
    env = jinja2.Environment(loader=loader,
                             undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True)
    env.filters["json"] = json_filter
    env.filters["tojson"] = json_filter
    return env


def template_path(name: str, templates_dir: Path | None,
                  templates: tuple = ()) -> tuple[Path, str]:
    """The file a template (``kubeflow/trainjob.yaml.j2``) is read from, and how problems name
    it (``templates/x.j2`` for the project's own, the package path for the packaged copy)."""
    if name in dict(templates):
        return Path("templates") / name, f"templates/{name}"
    if templates_dir is not None and os.path.lexists(Path(templates_dir) / name):
        return Path(templates_dir) / name, f"templates/{name}"
    return PACKAGED_TEMPLATES / name, f"mtgrpo/render/templates/{name}"


def render_template(name: str, templates_dir: Path | None, context: dict,
                    templates: tuple = ()) -> tuple[str, list]:
    """The template's text (values as tokens) and the values the tokens stand for.

    Raises ``UserError`` naming the template file and line for anything the template raises.
    """
    values: list = []
    file, shown = template_path(name, templates_dir, templates)
    try:
        text = environment(templates_dir, templates).get_template(name).render(
            **context, **{VALUES: values})
    except jinja2.TemplateSyntaxError as err:
        raise UserError(Problem(_shown(err.filename, file, shown), f"line {err.lineno}",
                                f"template syntax error: {err.message}",
                                "Jinja2 syntax")) from None
    except UnicodeDecodeError as err:
        raise UserError(Problem(shown, "", f"not UTF-8 (byte {err.start})",
                                "a UTF-8 text file")) from None
    except jinja2.TemplateNotFound as err:
        raise UserError(Problem(shown, "", f"template not found: {err.message or err.name}",
                                "templates inside templates/ (or the packaged ones)")) from None
    except Exception as err:  # noqa: BLE001 (whatever a template expression raises is its own)
        line = _line(err, str(file))
        message = str(err) if isinstance(err, jinja2.TemplateError) else \
            f"{type(err).__name__}: {err}"
        raise UserError(Problem(shown, f"line {line}" if line else "",
                                f"template failed: {message}",
                                "variables listed in docs/recipes.md")) from None
    return text, values


def _shown(filename: str | None, file: Path, shown: str) -> str:
    if not filename or os.path.realpath(filename) == os.path.realpath(file):
        return shown
    return filename  # an included or extended template


def _line(err: BaseException, filename: str) -> int | None:
    """The template line an exception was raised at (Jinja2 rewrites tracebacks so template
    frames carry the template's file name and line)."""
    line, tb = None, err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


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
