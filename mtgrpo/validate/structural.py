"""A fast yes/no check for Kubernetes structural schemas, ahead of jsonschema's full report.

CRD schemas use a handful of keywords (type, properties, items, additionalProperties, required,
format, description, x-kubernetes-*). For those, a tree of small closures answers "valid?" in
microseconds with no start-up cost; jsonschema then runs only on invalid objects, to list every
error with its path. A schema using any other keyword gets no fast check (``None``), and
jsonschema alone decides. tests/test_validate_crd.py checks both agree on many misshapen objects.
"""

from __future__ import annotations

from typing import Any, Callable

Check = Callable[[Any], bool]

_HANDLED = {"type", "properties", "items", "additionalProperties", "required", "format",
            "description", "minimum", "maximum"}


class _Unsupported(Exception):
    pass


def compile_structural(schema: dict) -> Check | None:
    """A function telling whether a value is valid under ``schema``, or None if unsupported."""
    try:
        return _compile(schema)
    except _Unsupported:
        return None


def _is_type(kind: str) -> Check:
    # The same type rules as jsonschema's Draft 7 checker (an integral float is an integer).
    if kind == "object":
        return lambda v: isinstance(v, dict)
    if kind == "array":
        return lambda v: isinstance(v, list)
    if kind == "string":
        return lambda v: isinstance(v, str)
    if kind == "boolean":
        return lambda v: isinstance(v, bool)
    if kind == "integer":
        return lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (
            isinstance(v, float) and v.is_integer())
    if kind == "number":
        return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "null":
        return lambda v: v is None
    raise _Unsupported(kind)


def _compile(schema: Any) -> Check:
    if not isinstance(schema, dict):
        raise _Unsupported(schema)
    unknown = {k for k in schema if k not in _HANDLED and not k.startswith("x-kubernetes-")}
    if unknown:
        raise _Unsupported(unknown)
    kind = schema.get("type")
    if isinstance(kind, list) or (kind is not None and not isinstance(kind, str)):
        raise _Unsupported(kind)
    type_ok = _is_type(kind) if kind else (lambda v: True)
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None or high is not None:  # jsonschema: bounds apply to numbers only
        typed = type_ok

        def type_ok(v: Any, typed: Check = typed) -> bool:
            if not typed(v):
                return False
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return True
            return (low is None or v >= low) and (high is None or v <= high)
    properties = {name: _compile(sub) for name, sub in schema.get("properties", {}).items()}
    required = tuple(schema.get("required", ()))
    extra = schema.get("additionalProperties", True)
    extra_check = _compile(extra) if isinstance(extra, dict) else None
    items = _compile(schema["items"]) if isinstance(schema.get("items"), dict) else None
    if "items" in schema and items is None:
        raise _Unsupported("items")

    def check(value: Any) -> bool:
        if not type_ok(value):
            return False
        if isinstance(value, dict):
            for name in required:
                if name not in value:
                    return False
            for name, item in value.items():
                sub = properties.get(name)
                if sub is not None:
                    if not sub(item):
                        return False
                elif extra is False:
                    return False
                elif extra_check is not None and not extra_check(item):
                    return False
        elif items is not None and isinstance(value, list):
            for item in value:
                if not items(item):
                    return False
        return True

    return check
