"""Translate an ACK SageMaker resource (a k8s object dict) into the Create* request it means."""

from __future__ import annotations

from typing import Any, Mapping

from mtgrpo.ack.shapes import Node, input_node, node

API_GROUP = "sagemaker.services.k8s.aws"

# ACK kind -> the SageMaker operation the controller calls to create it.
OPERATIONS: dict[str, str] = {
    "TrainingJob": "CreateTrainingJob",
    "HyperParameterTuningJob": "CreateHyperParameterTuningJob",
}


class TranslationError(ValueError):
    """The resource holds something the API request cannot: ``path`` names it (spec path)."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


def member_for(shape: Node, ack_key: str) -> str | None:
    """The API member of structure ``shape`` that ACK field ``ack_key`` maps to, or None."""
    # ACK renames members that collide with Go keywords with a trailing underscore (type_).
    return shape.folded.get(ack_key.rstrip("_").lower())


def operation_for(resource: Mapping[str, Any]) -> str:
    """The Create* operation for a resource, or TranslationError for a kind we do not know."""
    api_version = str(resource.get("apiVersion", ""))
    kind = resource.get("kind")
    if api_version.split("/")[0] != API_GROUP or kind not in OPERATIONS:
        raise TranslationError("kind", f"{api_version} {kind} is not an ACK SageMaker kind we "
                                       f"translate (one of {', '.join(OPERATIONS)})")
    return OPERATIONS[str(kind)]


def to_request(resource: Mapping[str, Any], *,
               strict: bool = True) -> tuple[str, dict[str, Any]]:
    """``(operation name, request dict)`` for an ACK TrainingJob or HyperParameterTuningJob.

    Strict (the default): a field the API does not have, or a value of the wrong JSON type,
    raises TranslationError naming its spec path. Not strict: unknown fields are dropped and
    values pass through unchanged, so a validator can report every problem of the rest.
    """
    operation = operation_for(resource)
    spec = resource.get("spec")
    if not isinstance(spec, Mapping):
        raise TranslationError("spec", "must be a mapping")
    return operation, _convert(input_node(operation), spec, "spec", strict)


def _convert(shape: Node, value: Any, path: str, strict: bool) -> Any:
    kind = shape.kind
    # Plain dict checks: YAML gives dicts, and isinstance against typing's Mapping ABC is slow.
    if kind == "structure":
        if not isinstance(value, dict):
            return _wrong(path, f"must be a mapping ({shape.name})", value, strict)
        out = {}
        for key, item in value.items():
            member = shape.folded.get(str(key).rstrip("_").lower())
            if member is None:
                if strict:
                    raise TranslationError(f"{path}.{key}", f"no member of {shape.name} matches")
                continue
            if item is None:
                continue  # an empty YAML value: the controller sends nothing
            out[member] = _convert(node(shape.members[member]), item, f"{path}.{key}", strict)
        return out
    if kind == "list":
        if not isinstance(value, list):
            return _wrong(path, f"must be a list ({shape.name})", value, strict)
        items = node(shape.member)
        return [_convert(items, item, f"{path}[{i}]", strict) for i, item in enumerate(value)]
    if kind == "map":
        if not isinstance(value, dict):
            return _wrong(path, f"must be a mapping ({shape.name})", value, strict)
        item_shape = node(shape.value)
        return {k: _convert(item_shape, v, f"{path}.{k}", strict) for k, v in value.items()}
    return _scalar(shape, value, path, strict)


def _wrong(path: str, message: str, value: Any, strict: bool) -> Any:
    if strict:
        raise TranslationError(path, message)
    return value


_SCALARS = {"string": (str,), "boolean": (bool,), "integer": (int,), "long": (int,),
            "float": (int, float), "double": (int, float)}


def _scalar(shape: Node, value: Any, path: str, strict: bool) -> Any:
    types = _SCALARS.get(shape.kind)
    if types is None:
        return value  # timestamp / blob: none appear in the specs we render
    ok = isinstance(value, types) and (shape.kind == "boolean" or not isinstance(value, bool))
    if not ok:
        return _wrong(path, f"must be {shape.kind}, got {type(value).__name__}", value, strict)
    return float(value) if shape.kind in ("float", "double") else value
