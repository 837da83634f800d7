"""Run the job as the image's non-root user, also where the platform starts it as root.

Kubeflow and HyperPod pods start the container as uid 10001 (their securityContext), so nothing
happens there. SageMaker starts the container as root and mounts ``/opt/ml`` owned by root,
where a process that is not root could not write the model or the checkpoints. So when the
entry point runs as root and the image names a user (``MTGRPO_RUN_AS=<uid>:<gid>``, set in the
Dockerfile), it gives that user the directories the job writes (the model, the output, the
checkpoints), then drops to it for good (groups, gid, uid) before reading any input: the
trainer, the task's code and vLLM never run as root.
"""

from __future__ import annotations

import os
from pathlib import Path

from mtgrpo.errors import Problem, UserError
from mtgrpo.sagemaker.contract import OptML

RUN_AS_ENV = "MTGRPO_RUN_AS"


def _run_as(value: str) -> tuple[int, int]:
    uid, _, gid = value.partition(":")
    try:
        ids = int(uid), int(gid or uid)
    except ValueError:
        ids = (-1, -1)
    if min(ids) <= 0:
        raise UserError(Problem("environment", RUN_AS_ENV, f"{value!r} is not a non-root "
                                "user", "<uid>:<gid>, both above 0"))
    return ids


def _chown_tree(top: Path, uid: int, gid: int) -> None:
    top.mkdir(parents=True, exist_ok=True)
    os.lchown(top, uid, gid)
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            os.lchown(os.path.join(folder, name), uid, gid)


def drop_root(layout: OptML, environ=None) -> tuple[int, int] | None:
    """Give the job's writable directories to ``MTGRPO_RUN_AS`` and become that user; the
    (uid, gid) dropped to, or None (not root, or no user named)."""
    env = os.environ if environ is None else environ
    value = env.get(RUN_AS_ENV, "").strip()
    if os.geteuid() != 0 or not value:
        return None
    uid, gid = _run_as(value)
    for folder in (layout.model_dir, layout.output_dir, layout.checkpoint_dir):
        _chown_tree(folder, uid, gid)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)  # last: from here on, root is gone (setuid as root drops all three ids)
    return uid, gid
