"""Check a SageMaker API request against botocore's bundled service model.

botocore's own client-side validation checks required members, types and minimums only. The
model also holds maximum lengths, patterns, enums (instance types among them), numeric maximums,
list lengths and map sizes, which SageMaker enforces on the server: this module checks all of
them offline, so a bad value fails at ``mtgrpo validate`` instead of as an ``ACK.Terminal``
condition after ``kubectl apply``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Mapping

from mtgrpo.ack import Node, input_node, node
from mtgrpo.errors import did_you_mean
from mtgrpo.validate.java_regex import matches

# A path step: ("member", name) in a structure, ("key", k) in a map, ("index", i) in a list.
Step = tuple[str, Any]


@dataclass(frozen=True)
class Violation:
    """One constraint of the service model that a request value breaks."""

    steps: tuple[Step, ...]
    message: str
    allowed: str = ""


def check_request(operation: str, request: Mapping[str, Any]) -> list[Violation]:
    """Every violation of ``operation``'s input shape in ``request`` (API member names)."""
    out: list[Violation] = []
    _check(input_node(operation), request, (), out)
    return out


_NUMBERS = {"integer": "an integer", "long": "an integer", "float": "a number",
            "double": "a number"}
# Java's Integer and Long: the bounds of a member whose shape gives none.
_JAVA_INTS = {"integer": (-2 ** 31, 2 ** 31 - 1), "long": (-2 ** 63, 2 ** 63 - 1)}


def _check(shape: Node, value: Any, steps: tuple[Step, ...], out: list[Violation]) -> None:
    kind = shape.kind
    if kind == "structure":
        if not isinstance(value, dict):  # not typing's Mapping: its isinstance is slow
            out.append(Violation(steps, f"must be a structure ({shape.name})", "a mapping"))
            return
        for name in shape.required:
            if name not in value:
                out.append(Violation(steps + (("member", name),),
                                     f"required by the SageMaker API ({shape.name}) but missing",
                                     f"a {node(shape.members[name]).kind} value"))
        for name, item in value.items():
            member = shape.members.get(name)
            if member is None:
                out.append(Violation(steps + (("member", name),), f"not a member of {shape.name}",
                                     ", ".join(shape.members)))
            else:
                _check(node(member), item, steps + (("member", name),), out)
    elif kind == "list":
        if not isinstance(value, list):
            out.append(Violation(steps, f"must be a list ({shape.name})", "a list"))
            return
        _bounds(shape, len(value), steps, "entries", out)
        items = node(shape.member)
        for i, item in enumerate(value):
            _check(items, item, steps + (("index", i),), out)
    elif kind == "map":
        if not isinstance(value, dict):
            out.append(Violation(steps, f"must be a map ({shape.name})", "a mapping"))
            return
        _bounds(shape, len(value), steps, "entries", out)
        key_shape, value_shape = node(shape.key), node(shape.value)
        for key, item in value.items():
            found: list[Violation] = []
            _check(key_shape, key, steps + (("key", key),), found)
            out.extend(Violation(v.steps, "key " + v.message, v.allowed) for v in found)
            _check(value_shape, item, steps + (("key", key),), out)
    elif kind == "string":
        _string(shape, value, steps, out)
    elif kind in _NUMBERS:
        ints = kind in ("integer", "long")
        if isinstance(value, bool) or not isinstance(value, int if ints else (int, float)):
            out.append(Violation(steps, f"must be {_NUMBERS[kind]}, got {type(value).__name__}",
                                 _NUMBERS[kind]))
            return
        _bounds(shape, value, steps, "", out, _JAVA_INTS.get(kind))
    elif kind == "boolean" and not isinstance(value, bool):
        out.append(Violation(steps, f"must be true or false, got {type(value).__name__}",
                             "true or false"))


def _string(shape: Node, value: Any, steps: tuple[Step, ...], out: list[Violation]) -> None:
    if not isinstance(value, str):
        out.append(Violation(steps, f"must be a string, got {type(value).__name__}",
                             "a string"))
        return
    if shape.enum:
        if value not in shape.enum:
            out.append(Violation(steps, f"{value!r} is not a valid {shape.name}"
                                 + did_you_mean(value, shape.enum_list),
                                 _list(shape.enum_list, value)))
        return
    _bounds(shape, len(value), steps, "characters", out)
    if shape.pattern and not matches(shape.pattern, value):
        out.append(Violation(steps, f"does not match the {shape.name} pattern", shape.pattern))


def _bounds(shape: Node, size: Any, steps: tuple[Step, ...], unit: str,
            out: list[Violation], limits: tuple[int, int] | None = None) -> None:
    low, high = shape.min, shape.max
    if limits is not None:  # a bound the model leaves out is Java's
        low = limits[0] if low is None else low
        high = limits[1] if high is None else high
    if low is not None and size < low:
        out.append(Violation(steps, f"{size} {unit}".strip() + " is below the minimum",
                             _range(shape.min, shape.max, unit) if shape.min is not None
                             else _range(low, high, unit) + " (a Java int)"))
    elif high is not None and size > high:
        out.append(Violation(steps, f"{size} {unit}".strip() + " is above the maximum",
                             _range(shape.min, shape.max, unit) if shape.max is not None
                             else _range(low, high, unit) + " (a Java int)"))


def _range(low: Any, high: Any, unit: str) -> str:
    unit = f" {unit}" if unit else ""
    if low is not None and high is not None:
        return f"{low} to {high}{unit}"
    return f"at least {low}{unit}" if low is not None else f"at most {high}{unit}"


def _list(values: tuple[str, ...], near: str) -> str:
    if len(values) <= 12:
        return ", ".join(values)
    closest = difflib.get_close_matches(near, values, n=4, cutoff=0.0)
    return f"one of {len(values)} values, the closest: {', '.join(closest)}"


def ack_path(spec: Mapping[str, Any], steps: tuple[Step, ...], prefix: str = "spec",
             spellings: Mapping[str, str] | None = None) -> str:
    """An API path spelled in the resource's field names (``spec.resourceConfig.instanceType``)."""
    path, node = prefix, spec  # type: str, Any
    for kind, name in steps:
        if kind == "index":
            path += f"[{name}]"
            node = node[name] if isinstance(node, list) and name < len(node) else None
            continue
        if kind == "member" and isinstance(node, Mapping):
            ack = next((k for k in node if str(k).rstrip("_").lower() == name.lower()), None)
            if ack is None:  # a missing member: spell it as the CRDs do
                ack = (spellings or {}).get(name.lower(), name[:1].lower() + name[1:])
            key = ack
        else:
            key = name
        path += f".{key}"
        node = node.get(key) if isinstance(node, Mapping) else None
    return path
