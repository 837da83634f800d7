"""Checkpoints that survive spot interruptions: complete-only resume, SIGTERM saves, metrics.

The HF Trainer writes ``checkpoint-<step>/`` (weights, optimizer, scheduler, RNG state per rank
``rng_state_<rank>.pth``, ``trainer_state.json`` with the step and data position) straight into
its output directory, so a crash mid-save leaves a half-written directory under the real name,
and SageMaker uploads checkpoint files to S3 as they appear, in no particular order. A checkpoint
therefore counts only once it is *committed*: after every rank of a node has finished saving,
that node's local rank 0 writes ``.mtgrpo-complete/node-<k>.json`` (to a temporary name, then
renamed) listing every file of the checkpoint on that node with its size. A checkpoint is
complete when a marker exists for every node and every file each marker lists is there with its
size. At start the launcher deletes incomplete checkpoints, so the Trainer's "newest checkpoint"
is the newest complete one.

SIGTERM (SageMaker's stop and spot interruption; SIGKILL follows 120 s later) sets a flag, or
the launcher creates a stop-request file; at the end of the current optimizer step every rank
agrees to stop, the Trainer saves that step's checkpoint, and :class:`TrainingInterrupted` ends
the worker without writing a final model. ``metrics.jsonl`` is copied into each checkpoint, and
restored from the resumed one, so the resumed run's step numbering neither repeats nor skips.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

from mtgrpo.contract.checkpoints import (MARKER_DIR, checkpoint_dirs, is_complete_dir,
                                         newest_complete)

METRICS_COPY = "mtgrpo-metrics.jsonl"
STOP_FILE_ENV = "MTGRPO_STOP_FILE"
# Written by a worker that stopped after saving: torchrun and accelerate report a worker's 143
# as a plain failure (exit 1), so the launcher reads this instead of the exit code.
STOPPED_FILE_ENV = "MTGRPO_STOPPED_FILE"
NODE_RANK_ENV = "MTGRPO_NODE_RANK"
NUM_NODES_ENV = "MTGRPO_NUM_NODES"


class TrainingInterrupted(BaseException):
    """Raised after the stop checkpoint is saved. A BaseException, like KeyboardInterrupt, so a
    trainer's ``except Exception`` does not turn an orderly stop into a failure."""

    def __init__(self, step: int):
        super().__init__(f"stopped by SIGTERM after saving checkpoint-{step}")
        self.step = step


# -- finding checkpoints ------------------------------------------------------------------------

def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``checkpoint-<step>`` directories, oldest first."""
    return checkpoint_dirs(directory)


def _file_sizes(checkpoint: Path) -> dict[str, int]:
    return {str(p.relative_to(checkpoint)): p.stat().st_size
            for p in sorted(checkpoint.rglob("*"))
            if p.is_file() and MARKER_DIR not in p.relative_to(checkpoint).parts}


def is_complete(checkpoint: Path) -> bool:
    """Every node committed it, and every file a node listed is present with its size (the one
    rule, :func:`mtgrpo.contract.checkpoints.is_complete`, over the directory's listing)."""
    return is_complete_dir(checkpoint)


def latest_complete_checkpoint(directory: Path) -> Path | None:
    return newest_complete(directory)


def commit(checkpoint: Path, *, node: int, num_nodes: int, step: int) -> Path:
    """Write this node's completion marker (temporary name, then rename)."""
    marker_dir = checkpoint / MARKER_DIR
    marker_dir.mkdir(parents=True, exist_ok=True)
    marker = marker_dir / f"node-{node:05d}.json"
    body = {"node": node, "num_nodes": num_nodes, "step": step,
            "files": _file_sizes(checkpoint)}
    tmp = marker_dir / f".{marker.name}.tmp"
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, marker)
    return marker


def prepare_resume(checkpoint_dir: Path, metrics_file: Path | None) -> Path | None:
    """Before training starts: delete incomplete checkpoints, restore ``metrics.jsonl`` to the
    newest complete one (or drop a stale one when starting over), return that checkpoint."""
    latest = latest_complete_checkpoint(checkpoint_dir)
    for _, path in list_checkpoints(checkpoint_dir):
        if not is_complete(path):
            shutil.rmtree(path, ignore_errors=True)
    if metrics_file is not None:
        saved = latest / METRICS_COPY if latest is not None else None
        if saved is not None and saved.is_file():
            _copy_atomic(saved, metrics_file)
        elif latest is None and metrics_file.exists():
            metrics_file.unlink()  # a previous attempt with no checkpoint: steps restart at 1
    return latest


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


# -- stop requests ------------------------------------------------------------------------------

class StopRequest:
    """Set by SIGTERM in this process or by the launcher's stop-request file."""

    def __init__(self, stop_file: str | os.PathLike | None = None):
        self.stop_file = Path(stop_file) if stop_file else None
        self.signalled = False

    @classmethod
    def from_env(cls) -> "StopRequest":
        return cls(os.environ.get(STOP_FILE_ENV) or None)

    def install_handler(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signalled = True

    def requested(self) -> bool:
        return self.signalled or bool(self.stop_file and self.stop_file.exists())


def rotate(directory: Path, keep: int | None) -> None:
    """Keep the newest ``keep`` checkpoints (the Trainer itself rotates only on the main node)."""
    if not keep:
        return
    for _, path in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
