"""A full disk while saving is one line naming the path and the bytes needed, never a traceback.

:func:`disk_full_guard` wraps a write (a metrics line, an events file, a model, a checkpoint):
when it fails for want of space it raises :class:`DiskFull`, a ``UserError``, so the CLI
prints one line and exits 1 and a container writes it as its failure reason. Writers report a
full disk differently (``OSError`` ENOSPC from Python, a ``RuntimeError`` "file write failed"
from ``torch.save``, a ``SafetensorError`` naming ``StorageFull`` from safetensors), so a failed
write also counts as a full disk when the volume has less free space than the write needed.

:func:`checkpoint_guard` adds what a checkpoint needs: the half-written ``checkpoint-N``
directory is removed (it would otherwise hold a partial ``trainer_state.json`` and pass for
complete), so the previous complete checkpoint stays the newest one.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from pathlib import Path
from typing import Callable, Iterator

from mtgrpo.errors import Problem, UserError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_MESSAGES = ("no space left on device", "storagefull", "disk quota exceeded", "file write failed")


class DiskFull(UserError):
    """Writing ``path`` needed about ``needed`` bytes more than the disk had."""

    def __init__(self, path: Path, needed: int, free: int | None, what: str = ""):
        self.path, self.needed, self.free = Path(path), int(needed), free
        have = f", {free} bytes free" if free is not None else ""
        super().__init__(Problem(str(path), "", f"disk full while saving {what or 'it'}: it "
                                 f"needs about {needed} bytes{have}; nothing was lost (the "
                                 "previous complete checkpoint is kept)",
                                 "free space on that volume, or an output directory on a "
                                 "larger one, then run again: it resumes"))


def free_bytes(path: Path) -> int | None:
    """Free bytes of the volume holding ``path`` (or its nearest existing parent)."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def is_disk_full(err: BaseException, path: Path, needed: int) -> bool:
    """Whether ``err``, raised while writing ``needed`` bytes under ``path``, means no space."""
    if isinstance(err, OSError) and err.errno in NO_SPACE:
        return True
    text = str(err).lower()
    if any(m in text for m in _MESSAGES):
        return True
    free = free_bytes(path)
    return free is not None and free < needed


@contextlib.contextmanager
def disk_full_guard(path: str | Path, needed: int | Callable[[], int],
                    what: str = "") -> Iterator[None]:
    """Turn a write failure for want of space under ``path`` into :class:`DiskFull`.

    ``needed``: the bytes the write needs (or a function computing it, called only on a
    failure)."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - writers raise many types for ENOSPC
        size = needed() if callable(needed) else needed
        if isinstance(err, DiskFull) or not is_disk_full(err, Path(path), size):
            raise
        raise DiskFull(Path(path), size, free_bytes(Path(path)), what) from None


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


@contextlib.contextmanager
def checkpoint_guard(folder: str | Path, needed: Callable[[], int]) -> Iterator[None]:
    """A checkpoint save into ``folder``: on a full disk the half-written folder is removed
    (unless it existed before) and :class:`DiskFull` raised."""
    folder = Path(folder)
    existed = folder.exists()
    try:
        with disk_full_guard(folder, needed, what=folder.name):
            yield
    except DiskFull:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        raise
