"""Writing the rendered tree: atomic per file (temp file + rename), orphans removed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Mapping

from mtgrpo.gitops.kustomization import MANIFESTS


def managed_files(root: Path) -> list[str]:
    """Files on disk that the renderer owns: ``manifests/*.yaml``, relative to ``root``."""
    folder = Path(root) / MANIFESTS
    if not folder.is_dir():
        return []
    return sorted(f"{MANIFESTS}/{p.name}" for p in folder.iterdir()
                  if p.is_file() and p.suffix in (".yaml", ".yml"))


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        return None


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_tree(root: Path, files: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Write ``files`` (relative path -> text) under ``root``; remove managed orphans.

    Returns (written, removed): unchanged files are not rewritten. Every new file is in place
    before any orphan is removed, so an interrupted run never leaves the kustomization
    pointing at a missing file.
    """
    root = Path(root)
    written = []
    manifests = sorted(k for k in files if k.startswith(f"{MANIFESTS}/"))
    others = sorted(k for k in files if k not in manifests)
    for rel in manifests + others:  # the kustomization last: it names the manifests
        if read_text(root / rel) != files[rel]:
            write_atomic(root / rel, files[rel])
            written.append(rel)
    removed = [rel for rel in managed_files(root) if rel not in files]
    for rel in removed:
        (root / rel).unlink()
    return written, removed
