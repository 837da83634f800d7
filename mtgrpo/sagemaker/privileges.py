"""Run the job as the image's non-root user, also where the platform starts it as root.

Kubeflow and HyperPod pods start the container as uid 10001 (their securityContext), so nothing
happens there. SageMaker starts the container as root and mounts ``/opt/ml`` owned by root,
where a process that is not root could not write the model or the checkpoints. So when the
entry point runs as root and the image names a user (``MTGRPO_RUN_AS=<uid>:<gid>``, set in the
Dockerfile), it gives that user the directories the job writes (the model, the output, the
checkpoints), then drops to it for good (groups, gid, uid) before reading any input: the
trainer, the task's code and vLLM never run as root. Standard library only: it runs before
the entry point imports the trainer (mtgrpo/sagemaker/__main__.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RUN_AS_ENV = "MTGRPO_RUN_AS"


class BadUser(ValueError):
    """MTGRPO_RUN_AS does not name a non-root user (an image build mistake)."""


def _run_as(value: str) -> tuple[int, int]:
    uid, _, gid = value.partition(":")
    try:
        ids = int(uid), int(gid or uid)
    except ValueError:
        ids = (-1, -1)
    if min(ids) <= 0:
        raise BadUser(f"{RUN_AS_ENV}={value!r} is not a non-root user (allowed: <uid>:<gid>, "
                      "both above 0)")
    return ids


def writable_dirs(root: Path) -> list[Path]:
    """The model, the output and the checkpoints (checkpointconfig.json's LocalPath when
    SageMaker wrote one, as mtgrpo.sagemaker.contract.OptML reads it)."""
    checkpoints = root / "checkpoints"
    config = root / "input" / "config" / "checkpointconfig.json"
    try:
        local = json.loads(config.read_text()).get("LocalPath") if config.is_file() else None
    except (OSError, ValueError, AttributeError):
        local = None
    if isinstance(local, str) and local:
        path = Path(local)
        checkpoints = root / path.relative_to("/opt/ml") if path.is_relative_to("/opt/ml") \
            else path
    return [root / "model", root / "output", checkpoints]


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    top.mkdir(parents=True, exist_ok=True)
    os.lchown(top, uid, gid)
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            os.lchown(os.path.join(folder, name), uid, gid)


def drop_root(root: Path, environ=None) -> tuple[int, int] | None:
    """Give the job's writable directories under the ``/opt/ml`` tree ``root`` to
    ``MTGRPO_RUN_AS`` and become that user; the (uid, gid) dropped to, or None (not root, or
    no user named)."""
    env = os.environ if environ is None else environ
    value = env.get(RUN_AS_ENV, "").strip()
    if os.geteuid() != 0 or not value:
        return None
    uid, gid = _run_as(value)
    for folder in writable_dirs(Path(root)):
        _chown_tree(folder, uid, gid)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)  # last: from here on, root is gone (setuid as root drops all three ids)
    return uid, gid
