#!/usr/bin/env python3
"""Splice the Lua health checks in health/*.lua into argocd-cm-health.yaml.

The Lua lives in its own files so it can be read, linted and tested as Lua; the ConfigMap patch
is generated from them. `python deploy/argocd/build_health_config.py` rewrites the patch;
`--check` exits 1 when it is stale (tests/test_argocd_health.py runs the same check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "argocd-cm-health.yaml"
sys.path.insert(0, str(HERE.parent.parent))  # this repository's mtgrpo, not an installed one


def scripts() -> dict[str, str]:
    """ConfigMap key -> Lua file, from every registered backend's ``health_checks``: Argo CD
    reads ``resource.customizations.health.<group>_<kind>``."""
    from mtgrpo.backends import registry

    return {f"resource.customizations.health.{kind}": path
            for backend in registry().values() for kind, path in backend.health_checks.items()}


HEADER = """\
# GENERATED from deploy/argocd/health/*.lua by deploy/argocd/build_health_config.py: do not edit.
# Argo CD health checks for ACK SageMaker jobs, Kubeflow TrainJobs and Katib Experiments that
# read the job status (docs/argocd.md, docs/kubeflow.md).
# Apply as a merge patch of the live argocd-cm:
#   kubectl -n argocd patch configmap argocd-cm --type merge \\
#     --patch-file deploy/argocd/argocd-cm-health.yaml
"""


class _Literal(str):
    """A string dumped as a YAML literal block, so the Lua stays readable in the ConfigMap."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, _literal)


def render() -> str:
    """The ConfigMap patch text, built from the Lua files."""
    data = {key: _Literal((HERE / path).read_text()) for key, path in scripts().items()}
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "argocd-cm", "namespace": "argocd",
                         "labels": {"app.kubernetes.io/name": "argocd-cm",
                                    "app.kubernetes.io/part-of": "argocd"}},
            "data": data}
    return HEADER + yaml.dump(body, Dumper=_Dumper, sort_keys=False, width=1000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the patch is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.name} is stale: run python deploy/argocd/build_health_config.py",
                  file=sys.stderr)
            return 1
        return 0
    tmp = OUTPUT.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(OUTPUT)
    print(f"wrote {OUTPUT.relative_to(HERE.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
