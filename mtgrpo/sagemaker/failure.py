"""Failure reporting: a short, specific reason in ``output/failure`` and a non-zero exit.

SageMaker shows the first 1024 characters of ``/opt/ml/output/failure`` as the job's
FailureReason, so the reason leads with what went wrong and where, on one line. The first writer
wins: a training worker's specific error is not overwritten by the launcher's generic "training
exited with code 1".
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Callable

from mtgrpo.errors import UserError

MAX_REASON = 1024
EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 2
EXIT_INTERRUPTED = 143  # 128 + SIGTERM: stopped after saving a checkpoint
EXIT_SIGINT = 130  # 128 + SIGINT (mtgrpo.stopping.EXIT_SIGINT): stopped, not failed
# A cluster pod's termination message: what `kubectl describe pod` shows as the reason.
TERMINATION_LOG_ENV = "MTGRPO_TERMINATION_LOG"  # tests point it at a temporary file
MAX_TERMINATION_MESSAGE = 4096  # what the kubelet keeps


class JobFailed(Exception):
    """A failure the container explains itself (server never healthy, a process died)."""


def describe(err: BaseException) -> str:
    """A one-line reason for an exception: user mistakes as their problem lines."""
    if isinstance(err, UserError):
        text = "; ".join(err.lines())
    elif isinstance(err, JobFailed):
        text = str(err)
    else:
        text = f"{type(err).__name__}: {err}"
    return " ".join(text.split())


def write_failure(path: Path, reason: str, *, overwrite: bool = False) -> bool:
    """Write ``reason`` (trimmed to 1024 chars) atomically. Returns False if a reason was already
    there and ``overwrite`` is off."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        return False
    reason = " ".join(reason.split())[:MAX_REASON]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(reason + "\n")
    if overwrite:
        os.replace(tmp, path)
        return True
    try:  # link() fails if another process wrote first: the first, most specific reason wins
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def clear_failure(path: Path) -> None:
    """Forget a previous attempt's reason (a restarted job on the same directory)."""
    path.unlink(missing_ok=True)


def report(path: Path, err: BaseException) -> int:
    """Record ``err`` as the job's failure, print it, and return the exit code to use."""
    reason = describe(err)
    if not isinstance(err, (UserError, JobFailed)):
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    print(f"error: {reason}", file=sys.stderr, flush=True)
    try:
        write_failure(path, reason)
    except OSError as write_err:  # a full disk: the printed line is the record then
        print(f"mtgrpo: could not write {path}: {write_err.strerror or write_err}",
              file=sys.stderr, flush=True)
    return EXIT_USER_ERROR if isinstance(err, (UserError, JobFailed)) else EXIT_INTERNAL_ERROR


def write_termination_message(path: Path, reason: str) -> None:
    """The reason Kubernetes shows for the container (the kubelet reads this file)."""
    try:
        with open(path, "w", encoding="utf-8") as handle:  # the kubelet's file: no rename
            handle.write(reason.encode("utf-8")[:MAX_TERMINATION_MESSAGE].decode(
                "utf-8", errors="ignore"))
    except OSError as err:
        print(f"mtgrpo: cannot write the termination message to {path}: {err}", flush=True)


def run_pod(run: Callable[[], int], failure_file: Path, termination: Path) -> int:
    """A cluster pod's job: ``run`` with every failure as ``output/failure`` and, unless the
    run succeeded or was stopped, as the pod's termination message too."""
    clear_failure(failure_file)
    try:
        code = run()
    except Exception as err:  # every failure, expected or not, ends as a reason
        code = report(failure_file, err)
    if code not in (0, EXIT_INTERRUPTED, EXIT_SIGINT) and failure_file.is_file():
        write_termination_message(termination, failure_file.read_text().strip())
    return code
