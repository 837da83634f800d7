"""Write every pod the rendered manifests hold as a plain ``kind: Pod`` file, for scanners that
read only core kinds (checkov's CKV_K8S checks; docs/security.md):

    python scripts/extract_pods.py manifests /tmp/pods && checkov -d /tmp/pods --framework kubernetes
"""

from __future__ import annotations

import sys
from pathlib import Path

from mtgrpo.recipes.yamlfile import dump_yaml, parse_yaml_all
from mtgrpo.validate.pod_security import pod_specs


def main(argv: list[str]) -> int:
    source, dest = Path(argv[0]), Path(argv[1])
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(source.glob("*.yaml")):
        for body in parse_yaml_all(path.read_text(encoding="utf-8"), source=str(path)):
            meta = body.get("metadata") or {}
            for i, (_, pod) in enumerate(pod_specs(body)):
                pod_file = dest / f"{path.stem}-{i}.yaml"
                pod_file.write_text(dump_yaml({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": f"{meta.get('name')}-{i}",
                                 "namespace": meta.get("namespace")},
                    "spec": pod}), encoding="utf-8")
                count += 1
    print(f"{count} pods written to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
