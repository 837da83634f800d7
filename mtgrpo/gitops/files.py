"""Writing the rendered tree: atomic per file (temp file + rename), orphans removed.

Everything under ``manifests/`` named ``*.yaml``/``*.yml`` is the renderer's, whatever it is on
disk: a file that is not UTF-8, a directory, a symlink or a FIFO in its place is drift to
``mtgrpo diff`` (never followed, never read) and is replaced by ``mtgrpo render``; so is a
``manifests`` or ``kustomization.yaml`` that is not a plain directory or file.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Mapping

from mtgrpo.gitops.kustomization import MANIFESTS

SUFFIXES = (".yaml", ".yml")


def managed_files(root: Path) -> list[str]:
    """Entries on disk that the renderer owns: ``manifests/*.yaml`` of any type, relative to
    ``root`` (none when ``manifests`` is not a real directory)."""
    folder = Path(root) / MANIFESTS
    if _kind(folder) != "directory":
        return []
    return sorted(f"{MANIFESTS}/{p.name}" for p in folder.iterdir() if p.suffix in SUFFIXES)


def _kind(path: Path) -> str | None:
    """What is at ``path`` without following a final symlink: file, directory, or another
    kind's name; None when nothing is."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    return "symbolic link" if stat.S_ISLNK(mode) else "special file"


def read_text(path: Path) -> str | None:
    """The text of a managed file; None when absent; for an entry of the wrong type or
    encoding, a one-line description that never equals rendered text (so it shows as drift)."""
    path = Path(path)
    if path.parent.name == MANIFESTS and _kind(path.parent) not in ("directory", None):
        return None  # manifests/ is a symlink or a file: nothing under it is ours to read
    kind = _kind(path)
    if kind is None:
        return None
    if kind != "file":
        return f"<a {kind}, not a file>\n"
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"<{len(data)} bytes that are not UTF-8 (byte {err.start})>\n"


def _clear(path: Path) -> None:
    """Remove whatever is at ``path`` unless it is a plain file (which is replaced in place)."""
    kind = _kind(path)
    if kind == "directory":
        shutil.rmtree(path)
    elif kind not in (None, "file"):
        path.unlink()


def write_atomic(path: Path, text: str) -> None:
    if _kind(path.parent) not in ("directory", None):
        path.parent.unlink()  # a file or symlink where the directory belongs
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear(path)
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
        _clear(root / rel)
        (root / rel).unlink(missing_ok=True)
    return written, removed
