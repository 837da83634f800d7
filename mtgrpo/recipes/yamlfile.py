"""YAML in and out, with YAML 1.2 number rules on both sides.

PyYAML follows YAML 1.1, where ``1e-6`` is a *string*; kubectl (go-yaml) and most people read it
as a float. The loader therefore reads exponent floats as floats (so ``learning_rate: 1e-6`` in a
recipe is a number), and the dumper quotes any string that another parser could take for a
number (so the hyperparameter ``"1e-06"`` stays a string when kubectl reads the manifest).
The writer is our own small emitter for JSON-like data: PyYAML's pure-Python representer was
most of the time of a render, and one fixed form per value keeps the output canonical.
Duplicate keys are refused: PyYAML would silently keep the last one.

This is the one reader of every YAML input (recipes, base files, ``_project.yaml``, the
templates' output, ``mtgrpo train`` configs, committed manifests in ``mtgrpo diff``), so its
bounds hold everywhere: document size, nesting depth, and the number and total bytes of values
after alias expansion are limited (measured on the composed node graph without recursion, before anything is built),
integers beyond 64 bits and numbers only YAML 1.1 reads as numbers (``60:00``, ``0755``) are
refused with their key and line, and only JSON-like types are built. docs/validation.md lists
the limits.
"""

from __future__ import annotations

import contextlib
import functools
import re
from pathlib import Path
from typing import Any, Iterator

import yaml

from mtgrpo.errors import Problem, UserError

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Exponent floats without a dot (``1e-6``, ``5E3``): floats to YAML 1.2 and go-yaml, strings
# to YAML 1.1.
_EXP_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")
# YAML 1.2 octal ints (``0o17``): a number to go-yaml v3, a string to PyYAML.
_OCTAL_12 = re.compile(r"^[-+]?0o[0-7]+$")


class Loader(_Loader):  # type: ignore[misc,valid-type]
    """Safe loader: exponent floats are floats, duplicate keys are an error, timestamps are
    strings."""


class _Resolver(yaml.resolver.Resolver):
    """YAML 1.1's implicit types plus YAML 1.2's exponent floats and ``0o`` octals: a string
    any of them would read as something else must be quoted."""


Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789."))
_Resolver.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789."))
_Resolver.add_implicit_resolver("tag:yaml.org,2002:int", _OCTAL_12, list("-+0"))
# go-yaml's float syntax, e.g. ``-.5``, which PyYAML reads as a string.
_Resolver.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."))
_RESOLVER = _Resolver()
_STR_TAG = "tag:yaml.org,2002:str"
# go-yaml v2 also reads y/Y/n/N as booleans.
_GO_BOOLS = {"y", "Y", "n", "N"}
_PLAIN = re.compile(r"^[A-Za-z0-9_./+=$][A-Za-z0-9_./+=$:@,()\- ]*$")
_PLAIN_DASH = re.compile(r"^-[A-Za-z0-9_./+=$][A-Za-z0-9_./+=$:@,()\- ]*$")


class DuplicateKey(Exception):
    def __init__(self, key: str, line: int):
        super().__init__(key)
        self.key, self.line = key, line


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *base`: merged by construct_mapping, own keys win
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in seen:
                raise DuplicateKey(str(key), key_node.start_mark.line + 1)
            seen.add(key)
        except TypeError:  # an unhashable key: let PyYAML report it
            break
    return loader.construct_mapping(node, deep=True)


Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# Bounds for hostile input (docs/validation.md): a recipe is a few kilobytes and a few hundred
# values, so these leave room for any real file and stop alias bombs and deep nesting early.
MAX_DOCUMENT_CHARS = 1_000_000
MAX_NODES = 100_000  # values after expanding every alias
# UTF-8 bytes of every scalar (keys and values) after expanding every alias: a document under
# MAX_DOCUMENT_CHARS that repeats one long string through aliases renders to many GB otherwise.
MAX_EXPANDED_BYTES = 10_000_000
MAX_DEPTH = 64       # nested mappings and lists, aliases expanded
INT64 = (-2 ** 63, 2 ** 63 - 1)  # no reader of a manifest (SageMaker, Kubernetes) goes beyond

_TAG = "tag:yaml.org,2002:"
# The JSON-like types; YAML 1.1's timestamps are read as strings (YAML 1.2 and go-yaml have none).
_ALLOWED_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "map", "seq",
                                    "timestamp", "merge")}
# YAML 1.1 number forms that YAML 1.2 parsers (go-yaml in kubectl) read otherwise: sexagesimal
# (``60:00`` = 3600), leading-zero octal (``0755`` = 493), binary, digit-group underscores.
_AMBIGUOUS_INT = re.compile(r"^[-+]?(?:0[0-7_]+|0b[01_]+|[0-9][0-9_]*(?::[0-5]?[0-9])+|"
                            r"[0-9]+_[0-9_]*)$")
_AMBIGUOUS_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|.*_.*)$")


Loader.add_constructor(_TAG + "timestamp", yaml.SafeLoader.construct_yaml_str)


@contextlib.contextmanager
def _reading(text: str, source: str, allowed: str) -> Iterator[Loader]:
    """A bounded loader for ``text``; every YAML problem leaves it as a one-line UserError."""
    if len(text) > MAX_DOCUMENT_CHARS:
        raise UserError(Problem(source, "", f"document is {len(text)} characters long",
                                f"at most {MAX_DOCUMENT_CHARS} characters"))
    loader = Loader(text)
    try:
        yield loader
    except DuplicateKey as err:
        raise UserError(Problem(source, err.key, f"duplicate key (line {err.line})",
                                "each key once per mapping")) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = getattr(err, "problem", None) or str(err)
        raise UserError(Problem(source, "", f"invalid YAML: {where}{what}", allowed)) from None
    except RecursionError:  # the pure-Python composer, where libyaml is missing
        raise UserError(Problem(source, "", "nested too deeply",
                                f"at most {MAX_DEPTH} levels of mappings and lists")) from None
    finally:
        loader.dispose()


def _constructed(loader: Loader, node: yaml.Node, source: str) -> Any:
    problems = _scan(node, source)
    if problems:
        raise UserError(problems)
    return loader.construct_document(node)


def parse_yaml(text: str, *, source: str) -> Any:
    """Parse one YAML document; every problem (syntax, duplicate keys, size, nesting, alias
    expansion, ambiguous or out-of-range numbers, non-JSON types) becomes a one-line
    UserError."""
    with _reading(text, source, "a YAML mapping") as loader:
        node = loader.get_single_node()
        return None if node is None else _constructed(loader, node, source)


def parse_yaml_all(text: str, *, source: str) -> list[Any]:
    """Every document of a multi-document stream (``---``), with parse_yaml's bounds on each."""
    docs = []
    with _reading(text, source, "YAML") as loader:
        while loader.check_node():
            docs.append(_constructed(loader, loader.get_node(), source))
    return docs


def _scan(root: yaml.Node, source: str) -> list[Problem]:
    """Problems of a composed document, found without recursion and without expanding aliases
    (an aliased node is visited once; its expanded size and depth are added where it is used).
    Paths are kept as (parent, step) links and spelled out only for a problem."""
    problems: list[Problem] = []
    done: dict[int, tuple[int, int, int]] = {}  # id(node) -> (values, depth, bytes), expanded
    active: set[int] = set()
    stack: list[tuple[Any, Any, Any]] = [(root, None, None)]
    scalar, sequence = yaml.ScalarNode, yaml.SequenceNode
    while stack:
        node, where, kids = stack.pop()
        ident = id(node)
        if kids is not None:  # leaving: every child is done
            size, depth, total = 1, 0, 0
            for child in kids:
                child_size, child_depth, child_bytes = done[id(child)]
                size += child_size
                total += child_bytes
                if child_depth > depth:
                    depth = child_depth
            done[ident] = (size, depth + 1, total)
            active.discard(ident)
            if size > MAX_NODES:
                return [Problem(source, _path(where)[:100], f"more than {MAX_NODES} values once "
                                "aliases are expanded", f"at most {MAX_NODES} values (an alias "
                                "counts as the values it repeats)")]
            if total > MAX_EXPANDED_BYTES:
                return [Problem(source, _path(where)[:100], f"more than {MAX_EXPANDED_BYTES} "
                                "bytes of values once aliases are expanded",
                                f"at most {MAX_EXPANDED_BYTES} bytes (an alias counts as the "
                                "bytes it repeats)")]
            if depth + 1 > MAX_DEPTH:
                return [Problem(source, "", f"nested more than {MAX_DEPTH} levels deep (line "
                                f"{node.start_mark.line + 1})",
                                f"at most {MAX_DEPTH} levels of mappings and lists")]
            continue
        if ident in done:
            continue
        if ident in active:
            return [Problem(source, _path(where), "an alias refers to a value that contains it",
                            "aliases of finished values only")]
        if node.tag not in _ALLOWED_TAGS:
            problems.append(Problem(source, _path(where), f"YAML tag {node.tag!r} is not allowed",
                                    "strings, numbers, booleans, null, mappings and lists"))
            done[ident] = (1, 1, 0)
            continue
        if type(node) is scalar:
            if node.tag in _NUMBER_TAGS:
                problem = _scalar_problem(node, source, where)
                if problem:
                    problems.append(problem)
            value = node.value
            done[ident] = (1, 1, len(value) if value.isascii() else len(value.encode()))
            continue
        active.add(ident)
        if type(node) is sequence:
            kids = node.value
            stack.append((node, where, kids))
            stack.extend((item, (where, i), None) for i, item in enumerate(kids)
                         if id(item) not in done)
        else:
            kids = [n for pair in node.value for n in pair]
            stack.append((node, where, kids))
            for key, value in node.value:
                step = (where, key.value if type(key) is scalar else "?")
                if id(key) not in done:
                    stack.append((key, step, None))
                if id(value) not in done:
                    stack.append((value, step, None))
    return problems


_NUMBER_TAGS = {_TAG + "int", _TAG + "float"}


def _path(where: Any) -> str:
    """``(((None, 'job'), 'inputs'), 0)`` -> ``job.inputs[0]``."""
    steps = []
    while where is not None:
        where, step = where
        steps.append(step)
    out = ""
    for step in reversed(steps):
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


def _scalar_problem(node: yaml.ScalarNode, source: str, where: Any) -> Problem | None:
    path = _path(where)
    text = node.value
    line = f" (line {node.start_mark.line + 1})"
    if node.tag == _TAG + "int":
        if _AMBIGUOUS_INT.match(text):
            return Problem(source, path, f"{text!r} is a number in YAML 1.1 (PyYAML) but not "
                           "in YAML 1.2 (kubectl's go-yaml)" + line,
                           "a plain decimal integer, or quote it to make it a string")
        digits = text.lstrip("+-")
        value = int(text, 16) if digits.startswith("0x") and len(text) < 40 else \
            int(text) if len(text) < 40 and digits.isdigit() else None
        if value is None and not digits.startswith("0x") and not digits.isdigit():
            return None  # let the constructor read (or refuse) it
        if value is None or not INT64[0] <= value <= INT64[1]:
            shown = text if len(text) <= 24 else f"{text[:12]}...({len(text)} characters)"
            return Problem(source, path, f"integer {shown} is out of range" + line,
                           "integers from -2^63 to 2^63-1, and the key's own range")
    elif node.tag == _TAG + "float" and _AMBIGUOUS_FLOAT.match(text):
        return Problem(source, path, f"{text!r} is a number in YAML 1.1 (PyYAML) but not in "
                       "YAML 1.2 (kubectl's go-yaml)" + line,
                       "a plain decimal number, or quote it to make it a string")
    return None


def read_yaml(path: Path, *, source: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(Problem(source, "", "file not found", "an existing YAML file")) from None
    except UnicodeDecodeError as err:
        raise UserError(Problem(source, "", f"not UTF-8 (byte {err.start})",
                                "a UTF-8 text file")) from None
    except OSError as err:
        raise UserError(Problem(source, "", f"cannot read file: {err.strerror or err}",
                                "a readable UTF-8 file")) from None
    return parse_yaml(text, source=source)


def dump_yaml(data: Any) -> str:
    """Canonical YAML for JSON-like data: keys sorted, block style, one form per value.

    Strings are plain when no YAML 1.1 or 1.2 parser (PyYAML, go-yaml in kubectl) could read
    them as anything but that string, else single-quoted, or JSON double-quoted when they hold
    characters single quotes cannot (newlines, tabs, control characters).
    """
    lines: list[str] = []
    _emit(data, 0, lines)
    return "\n".join(lines) + "\n"


def _emit(value: Any, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict) and value:
        for key in sorted(value, key=str):
            item = value[key]
            head = f"{pad}{_scalar(str(key))}:"
            if isinstance(item, dict) and item:
                lines.append(head)
                _emit(item, indent + 2, lines)
            elif isinstance(item, list) and item:
                lines.append(head)
                _emit(item, indent, lines)
            else:
                lines.append(f"{head} {_scalar(item)}")
    elif isinstance(value, list) and value:
        for item in value:
            if isinstance(item, (dict, list)) and item:
                nested: list[str] = []
                _emit(item, indent + 2, nested)
                lines.append(f"{pad}- {nested[0][indent + 2:]}")
                lines.extend(nested[1:])
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(f"{pad}{_scalar(value)}")


def _scalar(value: Any) -> str:
    if type(value) is str:  # noqa: E721 (the common case first)
        return _string(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    if isinstance(value, str):
        return _string(value)
    raise TypeError(f"cannot write {type(value).__name__} as YAML")


def _float(value: float) -> str:
    if value != value:
        return ".nan"
    if value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"  # YAML 1.1 needs the dot
    return text


@functools.lru_cache(maxsize=65536)
def _string(value: str) -> str:
    if (_PLAIN.match(value) or _PLAIN_DASH.match(value)) and not value.endswith(" ") \
            and not value.endswith(":") and not value.startswith("...") \
            and ": " not in value and " #" not in value and value not in _GO_BOOLS \
            and _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR_TAG:
        return value
    if value.isprintable():
        return "'" + value.replace("'", "''") + "'"
    return '"' + "".join(_escape(c) for c in value) + '"'


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
