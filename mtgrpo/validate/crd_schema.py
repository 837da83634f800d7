"""Validate k8s objects against their CRD's openAPIV3Schema with unknown fields rejected.

kubectl's strict field validation (the default since Kubernetes 1.27 for ``kubectl apply``)
refuses fields the schema does not list. jsonschema does not know that rule, so it is injected:
``additionalProperties: false`` wherever a schema lists ``properties`` and neither says
``x-kubernetes-preserve-unknown-fields`` nor gives its own ``additionalProperties``.
``metadata`` stays a free object, as the API server checks it against ObjectMeta, not the CRD.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import jsonschema

from mtgrpo.errors import Problem, UserError, did_you_mean
from mtgrpo.validate.structural import compile_structural


def default_crd_dir() -> Path:
    """``$MTGRPO_CRD_DIR``, else ``<repo>/../shared/crds`` if present, else the packaged copy."""
    env = os.environ.get("MTGRPO_CRD_DIR")
    if env:
        return Path(env)
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "crds"
    if (shared / "sagemaker.services.k8s.aws_trainingjobs.yaml").is_file():
        return shared
    return Path(__file__).resolve().parent / "crds"


_FORMATS = {"int32": (-2 ** 31, 2 ** 31 - 1), "int64": (-2 ** 63, 2 ** 63 - 1)}


def strict(schema: Any) -> Any:
    """A copy of an openAPIV3Schema in which unlisted fields are errors (kubectl strict mode)
    and integers keep to their ``format`` (int32, int64: the API server refuses the rest)."""
    schema = copy.deepcopy(schema)
    strictify(schema)
    return schema


def strictify(node: Any) -> None:
    """:func:`strict` in place (for a schema the caller already owns)."""
    if isinstance(node, list):
        for item in node:
            strictify(item)
        return
    if not isinstance(node, dict):
        return
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    if node.get("type") == "integer" and node.get("format") in _FORMATS:
        low, high = _FORMATS[node["format"]]
        node.setdefault("minimum", low)
        node.setdefault("maximum", high)
    for key, value in node.items():
        if key == "properties":
            for prop in value.values():
                strictify(prop)
        elif key in ("items", "additionalProperties", "allOf", "anyOf", "oneOf", "not"):
            strictify(value)


@functools.lru_cache(maxsize=None)
def _crds(crd_dir: str, mtime_key: tuple) -> list[dict]:
    """The CustomResourceDefinitions in ``crd_dir``'s YAML files (parsed once), through the
    bounded YAML reader: ``crd_dir`` may be a project's own directory."""
    from mtgrpo.recipes.yamlfile import parse_yaml_all

    docs = []
    for path in sorted(Path(crd_dir).glob("*.yaml")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UserError(Problem(str(path), "", f"cannot read the CRD file: {err}",
                                    "a UTF-8 YAML file")) from None
        for doc in parse_yaml_all(text, source=str(path)):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                if not _looks_like_crd(doc):
                    raise UserError(Problem(str(path), "spec", "not a CustomResourceDefinition "
                                            "with spec.group, spec.names.kind and versions with "
                                            "an openAPIV3Schema", "an apiextensions.k8s.io/v1 "
                                            "CustomResourceDefinition"))
                docs.append(doc)
    return docs


def _looks_like_crd(doc: dict) -> bool:
    spec = doc.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("group"), str) or \
            not isinstance(spec.get("names"), dict) or \
            not isinstance(spec["names"].get("kind"), str) or \
            not isinstance(spec.get("versions", []), list):
        return False
    return all(isinstance(v, dict) and isinstance(v.get("name"), str) and
               isinstance(v.get("schema"), dict) and
               isinstance(v["schema"].get("openAPIV3Schema"), dict) for v in spec["versions"])


@dataclass(frozen=True)
class _Schema:
    fast: Callable[[Any], bool]  # a quick yes/no (structural.py, or jsonschema's is_valid)
    full: Any  # jsonschema: slower, but lists every error with its path


@functools.lru_cache(maxsize=None)
def _validators(crd_dir: str, mtime_key: tuple) -> dict[tuple[str, str, str], _Schema]:
    """(group, version, kind) -> validators, for every CRD file in ``crd_dir``."""
    found = {}
    for doc in _crds(crd_dir, mtime_key):
        spec = doc["spec"]
        for version in spec.get("versions", []):
            try:
                schema = strict(version["schema"]["openAPIV3Schema"])
                full = jsonschema.Draft7Validator(schema)
                fast = compile_structural(schema) or full.is_valid
            except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as err:
                raise UserError(Problem(crd_dir, "", f"the {spec['names']['kind']} CRD schema "
                                        f"cannot be used: {type(err).__name__}: {err}",
                                        "the ACK SageMaker CRDs")) from None
            found[(spec["group"], version["name"], spec["names"]["kind"])] = _Schema(fast, full)
    return found


def validators(crd_dir: Path) -> dict[tuple[str, str, str], Any]:
    crd_dir = Path(crd_dir)
    # Re-read when a CRD file changes (tests swap directories); cheap stat calls otherwise.
    key = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(crd_dir.glob("*.yaml")))
    return _validators(str(crd_dir.resolve()), key)


@functools.lru_cache(maxsize=None)
def _spellings(crd_dir: str, mtime_key: tuple) -> dict[str, str]:
    found: dict[str, str] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                found.setdefault(name.rstrip("_").lower(), name)
                walk(prop)
            for key in ("items", "additionalProperties"):
                walk(node.get(key))

    for doc in _crds(crd_dir, mtime_key):
        for version in doc["spec"].get("versions", []):
            walk(version["schema"]["openAPIV3Schema"])
    return found


def field_spellings(crd_dir: Path) -> dict[str, str]:
    """Lower-cased field name -> its spelling in the CRDs (``rolearn`` -> ``roleARN``)."""
    crd_dir = Path(crd_dir)
    key = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(crd_dir.glob("*.yaml")))
    return _spellings(str(crd_dir.resolve()), key)


def check_against_crd(resource: dict, *, source: str, crd_dir: Path) -> list[Problem]:
    """Problems of one k8s object against its CRD, each naming the object's field path."""
    api_version = str(resource.get("apiVersion", ""))
    kind = str(resource.get("kind", ""))
    group, _, version = api_version.rpartition("/")
    table = validators(crd_dir)
    validator = table.get((group, version, kind))
    if validator is None:
        known = ", ".join(sorted(f"{g}/{v} {k}" for g, v, k in table)) or "none found"
        return [Problem(source, "kind", f"no CRD for {api_version} {kind} in {crd_dir}",
                        known)]
    try:
        if validator.fast(resource):
            return []
        # Invalid: collect every error, with its path, from the thorough validator.
        problems = [p for err in _errors(validator.full, resource)
                    for p in error_problems(err, source)]
    except (jsonschema.SchemaError, TypeError, ValueError, KeyError, AttributeError,
            RecursionError) as err:  # a project's own CRD directory with a broken schema
        raise UserError(Problem(str(crd_dir), "", f"the {api_version} {kind} CRD schema cannot "
                                f"be used: {type(err).__name__}: {err}",
                                "the ACK SageMaker CRDs")) from None
    return sorted(set(problems), key=lambda p: (p.key, p.message))


def _errors(validator: Any, resource: dict) -> Iterator[Any]:
    for err in validator.iter_errors(resource):
        # Report the innermost cause of a combined failure, not the wrapper.
        yield from (err.context or [err]) if err.validator in ("anyOf", "oneOf") else [err]


def error_problems(err: Any, source: str) -> list[Problem]:
    """One jsonschema error as problems (an unknown field: one per field, with the fields
    the schema lists)."""
    where = _join(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        names = sorted(err.schema.get("properties", {}))
        return [Problem(source, _dot(where, str(key)),
                        "unknown field (kubectl strict field validation refuses it)"
                        + did_you_mean(str(key), names), "fields: " + ", ".join(names))
                for key in sorted(err.instance, key=str) if key not in names]
    if err.validator == "required":
        return [Problem(source, _dot(where, str(name)), "required field is missing",
                        "required: " + ", ".join(err.validator_value))
                for name in err.validator_value if name not in err.instance]
    if err.validator == "type":
        return [Problem(source, where, f"wrong type {type(err.instance).__name__}",
                        f"{err.validator_value}")]
    return [Problem(source, where, err.message)]


def _join(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else _dot(out, str(part))[len(out):]
    return out


def _dot(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
