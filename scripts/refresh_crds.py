#!/usr/bin/env python3
"""Refresh the CRDs and schemas vendored in mtgrpo/validate/crds/ from their upstream sources.

mtgrpo/validate/crds/versions.json lists every vendored file: its upstream repository, release
tag (``version``), commit and path, and the sha256 of the copy. This script downloads each file
from GitHub at that commit, writes it over the copy and records its sha256. Run it by hand (it
needs the network); the tests never download anything, they check the copies against the table.

    python scripts/refresh_crds.py            # download at the pinned commits, update sha256
    python scripts/refresh_crds.py --resolve  # first set each commit from its version tag
    python scripts/refresh_crds.py --check    # no network: do the copies match the table?

To move to a new release: edit ``version`` in versions.json, run with ``--resolve``, re-run the
validation tests (tests/test_validate_crd.py, tests/test_kubeflow_render.py) and read the diff.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import urllib.request
from pathlib import Path

CRDS = Path(__file__).resolve().parent.parent / "mtgrpo" / "validate" / "crds"
TABLE = CRDS / "versions.json"


def _slug(repository: str) -> str:
    prefix = "https://github.com/"
    if not repository.startswith(prefix):
        raise SystemExit(f"{TABLE}: repository {repository!r} is not a https://github.com/ URL")
    return repository[len(prefix):].rstrip("/")


def _get(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "mtgrpo-refresh-crds"})
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (https only)
        return response.read()


def resolve_commit(repository: str, version: str) -> str:
    """The commit a release tag points at (GitHub's commits API peels annotated tags)."""
    data = json.loads(_get(f"https://api.github.com/repos/{_slug(repository)}/commits/{version}"))
    return data["sha"]


def check(table: dict) -> list[str]:
    """Files whose bytes differ from the table, are missing, or are not listed in it."""
    problems = []
    for name, entry in table["files"].items():
        path = CRDS / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from versions.json")
    for path in sorted(CRDS.rglob("*")):
        name = path.relative_to(CRDS).as_posix()
        if path.suffix in (".yaml", ".json") and name != TABLE.name and name not in table["files"]:
            problems.append(f"{name}: not listed in versions.json")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; no network")
    parser.add_argument("--resolve", action="store_true",
                        help="set each commit from its version tag before downloading")
    args = parser.parse_args(argv)
    table = json.loads(TABLE.read_text())
    if args.check:
        problems = check(table)
        print("\n".join(problems) or f"{len(table['files'])} files match versions.json")
        return 1 if problems else 0
    resolved: dict[tuple[str, str], str] = {}
    for name, entry in table["files"].items():
        if args.resolve:
            key = (entry["repository"], entry["version"])
            if key not in resolved:
                resolved[key] = resolve_commit(*key)
            entry["commit"] = resolved[key]
        url = (f"https://raw.githubusercontent.com/{_slug(entry['repository'])}/"
               f"{entry['commit']}/{entry['path']}")
        data = _get(url)
        digest = hashlib.sha256(data).hexdigest()
        changed = digest != entry["sha256"]
        (CRDS / name).parent.mkdir(parents=True, exist_ok=True)
        (CRDS / name).write_bytes(data)
        entry["sha256"] = digest
        print(f"{'changed  ' if changed else 'unchanged'} {name} ({entry['version']}, "
              f"{entry['commit'][:12]})")
    TABLE.write_text(json.dumps(table, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
