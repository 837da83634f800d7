"""A light, cached view of botocore's SageMaker shapes (walking botocore's objects is slow)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any


@functools.lru_cache(maxsize=1)
def service_model() -> Any:
    """botocore's bundled SageMaker service model (loaded once; offline)."""
    import botocore.session

    return botocore.session.get_session().get_service_model("sagemaker")


@dataclass(eq=False)
class Node:
    """One shape: its kind and constraints; member shapes are looked up by name with node()."""

    name: str
    kind: str  # structure, list, map, string, integer, long, float, double, boolean, ...
    members: dict[str, str] = field(default_factory=dict)  # structure: member -> shape name
    folded: dict[str, str] = field(default_factory=dict)  # structure: lower-case -> member
    required: tuple[str, ...] = ()
    member: str = ""  # list: the member's shape name
    key: str = ""  # map: the key's shape name
    value: str = ""  # map: the value's shape name
    min: Any = None
    max: Any = None
    pattern: str = ""
    enum: frozenset[str] = frozenset()
    enum_list: tuple[str, ...] = ()


@functools.lru_cache(maxsize=None)
def node(shape_name: str) -> Node:
    shape = service_model().shape_for(shape_name)
    meta = shape.metadata
    out = Node(name=shape.name, kind=shape.type_name, min=meta.get("min"), max=meta.get("max"),
               pattern=meta.get("pattern", ""))
    if shape.type_name == "structure":
        out.members = {name: member.name for name, member in shape.members.items()}
        out.folded = {name.lower(): name for name in shape.members}
        out.required = tuple(shape.required_members)
    elif shape.type_name == "list":
        out.member = shape.member.name
    elif shape.type_name == "map":
        out.key, out.value = shape.key.name, shape.value.name
    elif shape.type_name == "string" and getattr(shape, "enum", None):
        out.enum_list = tuple(shape.enum)
        out.enum = frozenset(shape.enum)
    return out


@functools.lru_cache(maxsize=None)
def input_node(operation: str) -> Node:
    return node(service_model().operation_model(operation).input_shape.name)
