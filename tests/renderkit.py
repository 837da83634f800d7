"""Helpers for the render tests: a throw-away copy of this repo's GitOps content."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CRDS = REPO / "mtgrpo" / "validate" / "crds"  # the packaged copies (versions.json)


def copy_project(dest: Path, *, rendered: bool = True) -> Path:
    """Copy recipes/ (recipes, base/, _project.yaml), templates/ and, with ``rendered``, the
    committed manifests/ and kustomization.yaml into ``dest``."""
    (dest / "recipes").mkdir(parents=True)
    for path in (REPO / "recipes").iterdir():
        if path.is_file():
            shutil.copy2(path, dest / "recipes" / path.name)
    shutil.copytree(REPO / "recipes" / "base", dest / "recipes" / "base")
    shutil.copytree(REPO / "templates", dest / "templates")
    if rendered:
        shutil.copytree(REPO / "manifests", dest / "manifests")
        shutil.copy2(REPO / "kustomization.yaml", dest / "kustomization.yaml")
    return dest


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes), to prove nothing was written."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}
