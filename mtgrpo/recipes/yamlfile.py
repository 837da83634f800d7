"""YAML in and out, with YAML 1.2 number rules on both sides.

PyYAML follows YAML 1.1, where ``1e-6`` is a *string*; kubectl (go-yaml) and most people read it
as a float. The loader therefore reads exponent floats as floats (so ``learning_rate: 1e-6`` in a
recipe is a number), and the dumper quotes any string that another parser could take for a
number (so the hyperparameter ``"1e-06"`` stays a string when kubectl reads the manifest).
Duplicate keys are refused: PyYAML would silently keep the last one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from mtgrpo.errors import Problem, UserError

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# Exponent floats without a dot (``1e-6``, ``5E3``): floats to YAML 1.2 and go-yaml, strings
# to YAML 1.1.
_EXP_FLOAT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")
# YAML 1.2 octal ints (``0o17``): a number to go-yaml v3, a string to PyYAML.
_OCTAL_12 = re.compile(r"^[-+]?0o[0-7]+$")


class Loader(_Loader):  # type: ignore[misc,valid-type]
    """Safe loader: exponent floats are floats, duplicate keys are an error."""


class Dumper(_Dumper):  # type: ignore[misc,valid-type]
    """Safe dumper that quotes strings a YAML 1.2 parser would read as numbers."""


Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789."))
Dumper.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789."))
Dumper.add_implicit_resolver("tag:yaml.org,2002:int", _OCTAL_12, list("-+0"))


class DuplicateKey(Exception):
    def __init__(self, key: str, line: int):
        super().__init__(key)
        self.key, self.line = key, line


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in seen:
                raise DuplicateKey(str(key), key_node.start_mark.line + 1)
            seen.add(key)
        except TypeError:  # an unhashable key: let PyYAML report it
            break
    return loader.construct_mapping(node, deep=True)


Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line strings as literal blocks: readable in review and in diffs.
    style = "|" if "\n" in value and not value.endswith(" ") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _represent_str)


def parse_yaml(text: str, *, source: str) -> Any:
    """Parse one YAML document; syntax errors and duplicate keys become a one-line UserError."""
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 (Loader is a SafeLoader)
    except DuplicateKey as err:
        raise UserError(Problem(source, err.key, f"duplicate key (line {err.line})",
                                "each key once per mapping")) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = getattr(err, "problem", None) or str(err)
        raise UserError(Problem(source, "", f"invalid YAML: {where}{what}",
                                "a YAML mapping")) from None


def read_yaml(path: Path, *, source: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(Problem(source, "", "file not found", "an existing YAML file")) from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(Problem(source, "", f"cannot read file: {err}",
                                "a readable UTF-8 file")) from None
    return parse_yaml(text, source=source)


def dump_yaml(data: Any) -> str:
    """Canonical YAML: keys sorted, block style, no line folding, unicode kept."""
    return yaml.dump(data, Dumper=Dumper, sort_keys=True, default_flow_style=False,
                     allow_unicode=True, width=1 << 30, indent=2)
