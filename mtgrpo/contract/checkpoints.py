"""The one rule for when a checkpoint is complete, over a listing of its files: the same for a
local directory (the SageMaker launcher, ``mtgrpo train``, the trainer's resume) and for an S3
prefix (the Kubeflow pods' upload and resume).

A checkpoint ``checkpoint-<step>/`` is committed node by node: once every rank of a node has
saved, the node writes ``.mtgrpo-complete/node-<k>.json`` listing every file of the checkpoint
on that node with its size (``mtgrpo.sagemaker.checkpoints.commit``). It is complete when a
marker exists for every node (all agreeing on ``num_nodes``) and every file a marker lists is
in the listing with that size. A checkpoint cut short (a stop or a spot interruption mid-save,
a half-finished upload) has no marker yet, or misses a listed file, and never counts.

Standard library only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Mapping

MARKER_DIR = ".mtgrpo-complete"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def is_complete(files: Mapping[str, int], read: Callable[[str], bytes | str]) -> bool:
    """Whether a checkpoint is complete. ``files``: every file under ``checkpoint-<step>/``,
    its path relative to that directory (``/``-separated) -> size; ``read(name)``: the bytes
    of one of them (a marker). A marker that cannot be read or parsed makes it incomplete."""
    markers = sorted(f for f in files if f.startswith(MARKER_DIR + "/")
                     and f.rsplit("/", 1)[-1].startswith("node-") and f.endswith(".json"))
    if not markers:
        return False
    nodes, expected = set(), None
    for marker in markers:
        try:
            data = json.loads(read(marker))
        except (OSError, ValueError):
            return False
        if not isinstance(data, dict):
            return False
        nodes.add(data.get("node"))
        expected = data.get("num_nodes") if expected is None else expected
        if data.get("num_nodes") != expected:
            return False
        listed = data.get("files", {})
        if not isinstance(listed, dict) or any(files.get(name) != size
                                               for name, size in listed.items()):
            return False
    return isinstance(expected, int) and nodes == set(range(expected))


def local_files(checkpoint: Path) -> dict[str, int]:
    """The listing of a local checkpoint directory (markers included)."""
    out = {}
    for path in sorted(Path(checkpoint).rglob("*")):
        try:
            if path.is_file():
                out[path.relative_to(checkpoint).as_posix()] = path.stat().st_size
        except OSError:
            continue  # removed while listing: it is not there
    return out


def is_complete_dir(checkpoint: Path) -> bool:
    """:func:`is_complete` for a local directory."""
    checkpoint = Path(checkpoint)
    return is_complete(local_files(checkpoint), lambda name: (checkpoint / name).read_bytes())


def checkpoint_dirs(directory: Path) -> list[tuple[int, Path]]:
    """``checkpoint-<step>`` directories, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in directory.iterdir()
                  if p.is_dir() and (m := CHECKPOINT.match(p.name)))


def newest_complete(directory: Path) -> Path | None:
    """The highest-step complete checkpoint under ``directory``, or None."""
    for _, path in reversed(checkpoint_dirs(directory)):
        if is_complete_dir(path):
            return path
    return None
