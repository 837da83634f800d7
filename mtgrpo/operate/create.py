"""Create a job's resource and wait for it: the step the pipeline components run.

The waiting is ``wait_for``, the same code as ``mtgrpo wait``. The resource's name is a content
hash of its spec (``mtgrpo.render.naming``), so a resource that exists already under that name
is the same job (a retried step): it is waited for, not created again.

Stopping: SageMaker stops a job when its resource is deleted (docs/ack-controller.md). When the
step is cancelled (SIGTERM, as Kubeflow Pipelines / Argo send to a cancelled run's pods, or
Ctrl-C) or gives up at its timeout, the resource it created is deleted so the job stops and
stops costing.
A resource the step found already there is left alone: someone else owns it.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from mtgrpo.operate.kube import AlreadyExists, Kube
from mtgrpo.operate.wait import TIMED_OUT, Outcome, wait_for


class Cancelled(BaseException):
    """SIGTERM arrived while waiting. A BaseException, so ordinary handlers do not swallow it."""


def create_and_wait(kube: Kube, body: dict, *, timeout_s: float,
                    progress: Callable[[str], None] = lambda line: None,
                    **wait_options) -> Outcome:
    kind, name = body["kind"], body["metadata"]["name"]
    try:
        kube.create(body)
        created = True
        progress(f"created {kind} {name} in namespace {kube.namespace}")
    except AlreadyExists:
        created = False
        progress(f"{kind} {name} exists already (same name, same spec): waiting for it")
    with _delete_when_cancelled(kube, kind, name, created, progress):
        outcome = wait_for(kube, kind, name, timeout_s=timeout_s, progress=progress,
                           **wait_options)
    if outcome.code == TIMED_OUT and created:
        _stop(kube, kind, name, progress, "timed out")
    return outcome


@contextmanager
def _delete_when_cancelled(kube: Kube, kind: str, name: str, created: bool,
                           progress: Callable[[str], None]) -> Iterator[None]:
    previous = None
    if threading.current_thread() is threading.main_thread():
        def on_term(signum, frame):
            raise Cancelled()
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except (Cancelled, KeyboardInterrupt):
        if created:
            _stop(kube, kind, name, progress, "cancelled")
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop(kube: Kube, kind: str, name: str, progress: Callable[[str], None], why: str) -> None:
    gone = kube.delete(kind, name)
    progress(f"{why}: deleted {kind} {name} so SageMaker stops the job" if gone
             else f"{why}: {kind} {name} was already gone")
