"""Writing the rendered tree: atomic per file (temp file + rename), orphans removed.

Everything named ``*.yaml``/``*.yml`` directly under ``manifests/`` or one of its backend
folders (``manifests/<backend>/``) is the renderer's, whatever it is on disk: a file that is
not UTF-8, a directory, a symlink or a FIFO in its place is drift to ``mtgrpo diff`` (never
followed, never read) and is replaced by ``mtgrpo render``; so is a ``manifests`` (or backend
folder) or ``kustomization.yaml`` that is not a plain directory or file.
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
    """Entries on disk that the renderer owns: ``manifests/*.yaml`` and
    ``manifests/<folder>/*.yaml`` of any type, relative to ``root`` (none under a
    ``manifests`` or folder that is not a real directory)."""
    folder = Path(root) / MANIFESTS
    if _kind(folder) != "directory":
        return []
    out = []
    for entry in folder.iterdir():
        if entry.suffix in SUFFIXES:
            out.append(f"{MANIFESTS}/{entry.name}")
        elif _kind(entry) == "directory":
            out += [f"{MANIFESTS}/{entry.name}/{p.name}" for p in entry.iterdir()
                    if p.suffix in SUFFIXES]
    return sorted(out)


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
    folders = [path.parent] if path.parent.name == MANIFESTS else \
        [path.parent, path.parent.parent] if path.parent.parent.name == MANIFESTS else []
    if any(_kind(f) not in ("directory", None) for f in folders):
        return None  # manifests/ (or a backend's folder) is a symlink or a file: not ours
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
    # manifests/ first, then manifests/<backend>/: never write through a symlink
    folders = [path.parent.parent, path.parent] if path.parent.parent.name == MANIFESTS \
        else [path.parent]
    for folder in folders:
        if _kind(folder) not in ("directory", None):
            folder.unlink()  # a file or symlink where the directory belongs
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

    def order(rel: str) -> tuple:  # objects, then the folders' kustomizations, then the top
        return (rel.count("/") == 0, Path(rel).name == "kustomization.yaml", rel)

    for rel in sorted(files, key=order):  # a kustomization never names a missing file
        if read_text(root / rel) != files[rel]:
            write_atomic(root / rel, files[rel])
            written.append(rel)
    removed = [rel for rel in managed_files(root) if rel not in files]
    for rel in removed:
        _clear(root / rel)
        (root / rel).unlink(missing_ok=True)
    for folder in {(root / rel).parent for rel in removed}:  # a backend with no recipes left
        if folder != root / MANIFESTS and _kind(folder) == "directory" and \
                not any(folder.iterdir()):
            folder.rmdir()
    return written, removed
