"""Refresh the vendored HyperPod SDK models and the JSON schema generated from them.

    pip download --no-deps sagemaker-hyperpod==VERSION -d /tmp/hp
    python -m mtgrpo.hyperpod.vendor.refresh /tmp/hp/sagemaker_hyperpod-VERSION-py3-none-any.whl

The SDK's pydantic models of ``HyperPodPyTorchJob`` are generated from the training operator's
CRD; the SDK itself is not a dependency (it pins pytest, requests, click and pulls awscli,
hydra and the SageMaker core SDK). This copies the two model modules verbatim, writes
``hyperpodpytorchjob.schema.json`` (what :mod:`mtgrpo.hyperpod.validate` checks with
jsonschema at render time) and ``instance_resources.json`` (GPUs and EFA interfaces per
instance type, the SDK's own table), and prints the rows for SOURCE.md. Needs pydantic >= 2.11.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import importlib.util
import json
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).parent
# Kept verbatim as text (.py.txt): the SDK's generated code is not this project's to lint or
# type-check, and no import finds it by accident; load_models imports it from its file.
MEMBERS = {
    "sagemaker/hyperpod/training/config/hyperpod_pytorch_job_unified_config.py":
        "sdk_job_models.py.txt",
    "sagemaker/hyperpod/common/config/metadata.py": "sdk_metadata.py.txt",
}
CONSTANTS = "sagemaker/hyperpod/training/constants.py"
SCHEMA_FILE = HERE / "hyperpodpytorchjob.schema.json"
INSTANCES_FILE = HERE / "instance_resources.json"
API_VERSION = "sagemaker.amazonaws.com/v1"
KIND = "HyperPodPyTorchJob"


def load_models(directory: Path = HERE):
    """The vendored SDK modules, imported from their files (pydantic needed)."""
    out = {}
    for name in ("sdk_job_models", "sdk_metadata"):
        path = str(directory / f"{name}.py.txt")
        loader = importlib.machinery.SourceFileLoader(f"_mtgrpo_hyperpod_{name}", path)
        spec = importlib.util.spec_from_file_location(loader.name, path, loader=loader)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out[name] = module
    return out["sdk_job_models"], out["sdk_metadata"]


def _strict(node):
    """Without the field descriptions (the SDK's docstrings: four fifths of the bytes), and
    with ``anyOf`` branches sorted: ``typing`` caches ``Union[int, str]`` as whichever order
    the process built first, so the generated order depends on what was imported before."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()
               if not (k == "description" and isinstance(v, str))}
        if isinstance(out.get("anyOf"), list):
            out["anyOf"] = sorted(out["anyOf"], key=lambda v: json.dumps(v, sort_keys=True))
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def job_schema(models, metadata) -> dict:
    """The whole object: apiVersion, kind, metadata (the SDK's Metadata), spec (the SDK's
    ``_HyperPodPytorchJob``), field names as the API spells them (by_alias=False)."""
    spec = models._HyperPodPytorchJob.model_json_schema(by_alias=False)
    defs = spec.pop("$defs", {})
    # The top model ignores unknown keys (extra="ignore"); the operator's structural CRD
    # prunes them, so a misspelt key would vanish silently: refuse it instead.
    spec["additionalProperties"] = False
    meta = metadata.Metadata.model_json_schema(by_alias=False)
    meta["additionalProperties"] = False
    defs["_Spec"] = spec
    defs["_ObjectMeta"] = meta
    return _strict({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": KIND,
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": KIND},
            "metadata": {"$ref": "#/$defs/_ObjectMeta"},
            "spec": {"$ref": "#/$defs/_Spec"},
        },
        "$defs": defs,
    })


def instance_resources(constants_source: str) -> dict:
    """``INSTANCE_RESOURCES`` of the SDK's training constants, read without importing it."""
    for node in ast.parse(constants_source).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "INSTANCE_RESOURCES" for t in node.targets):
            table = ast.literal_eval(node.value)
            return {name: {"gpus": row["gpu"], "efa": row["efa"], "vcpus": row["cpu"],
                           "memory_gib": row["memory"]}
                    for name, row in sorted(table.items())}
    raise SystemExit(f"INSTANCE_RESOURCES not found in {CONSTANTS}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    wheel = Path(args[0])
    rows = [f"| {wheel.name} | wheel | {hashlib.sha256(wheel.read_bytes()).hexdigest()} |"]
    with zipfile.ZipFile(wheel) as archive:
        for member, target in MEMBERS.items():
            raw = archive.read(member)
            (HERE / target).write_bytes(raw)
            rows.append(f"| {member} | {target} | {hashlib.sha256(raw).hexdigest()} |")
        constants = archive.read(CONSTANTS).decode("utf-8")
    models, metadata = load_models()
    for path, data in ((SCHEMA_FILE, job_schema(models, metadata)),
                       (INSTANCES_FILE, instance_resources(constants))):
        text = json.dumps(data, indent=1, sort_keys=True) + "\n"
        path.write_text(text, encoding="utf-8")
        rows.append(f"| (generated) | {path.name} | "
                    f"{hashlib.sha256(text.encode()).hexdigest()} |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
