"""Wait for a job to finish: watch its resource, survive dropped watches, give up at a timeout.

Exit codes (``mtgrpo wait`` and the pipeline components share them): 0 Completed; 1 Failed or
Stopped (the failure reason is the message), or the resource was deleted; 2 the ``ACK.Terminal``
condition (the controller gave up; its message); 124 the timeout passed first (as coreutils
``timeout`` does).

The watch follows Kubernetes' list-then-watch protocol: list the one resource (by field
selector) for its state and the list's resourceVersion, watch from there, resume from the last
version seen when the connection drops or the server ends the stream, and relist when the
server answers 410 Gone (that version is compacted away).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from mtgrpo.operate.jobs import DONE, FAILED, JobView, format_elapsed, view
from mtgrpo.operate.kube import Kube, WatchDropped, WatchGone

COMPLETED, FAILED_EXIT, TERMINAL, TIMED_OUT = 0, 1, 2, 124


@dataclass
class Outcome:
    code: int
    message: str
    job: JobView | None

    @property
    def ok(self) -> bool:
        return self.code == COMPLETED


def outcome_of(job: JobView) -> Outcome | None:
    """The final outcome a resource shows, or None while the job is still going."""
    if job.terminal:  # checked first: the controller stopped reconciling, whatever the status
        return Outcome(TERMINAL, f"{job.name}: Terminal: {job.terminal}", job)
    if job.status == DONE:
        return Outcome(COMPLETED, f"{job.name}: Completed", job)
    if job.status in FAILED:
        reason = job.failure_reason or "no failure reason given"
        return Outcome(FAILED_EXIT, f"{job.name}: {job.status}: {reason}", job)
    return None


def wait_for(kube: Kube, kind: str, name: str, *, timeout_s: float,
             progress: Callable[[str], None] = lambda line: None,
             heartbeat_s: float = 300.0, watch_s: float = 60.0,
             retry_s: float = 1.0) -> Outcome:
    """Watch ``kind/name`` until it finishes or ``timeout_s`` passes; report changes to ``progress``."""
    deadline = time.monotonic() + timeout_s
    reporter = _Reporter(progress, heartbeat_s)
    version, relist, failures = "", True, 0
    job: JobView | None = None
    while True:
        if relist:
            items, version = kube.list_with_version(kind, field_selector=f"metadata.name={name}")
            if not items:
                return Outcome(FAILED_EXIT, f"{name}: the resource does not exist (deleted?)", job)
            job = view(items[0])
            reporter.show(job)
            done = outcome_of(job)
            if done:
                return done
            relist = False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            state = (job.status if job is not None else None) or "pending"
            return Outcome(TIMED_OUT, f"{name}: still {state} after the "
                                      f"{format_elapsed(timeout_s)} timeout", job)
        try:
            for event in kube.watch(kind, name, version, timeout_s=min(remaining, watch_s)):
                obj = event.get("object") or {}
                version = obj.get("metadata", {}).get("resourceVersion", version)
                failures = 0
                if event.get("type") == "BOOKMARK":
                    continue
                if event.get("type") == "DELETED":
                    return Outcome(FAILED_EXIT, f"{name}: the resource was deleted", job)
                obj.setdefault("kind", kind)
                job = view(obj)
                reporter.show(job)
                done = outcome_of(job)
                if done:
                    return done
                if time.monotonic() >= deadline:
                    break
            reporter.heartbeat(job)
            failures = 0
        except WatchGone:
            progress(f"{name}: watch expired (410 Gone); listing again")
            relist = True
        except WatchDropped as err:
            # Back off while the API server is away (an upgrade, a network cut), up to 30 s,
            # and keep trying until the deadline: the job runs on whether we watch or not.
            delay = min(retry_s * 2 ** failures, 30.0)
            failures += 1
            progress(f"{name}: watch connection lost ({err}); resuming at version {version} "
                     f"in {delay:g}s")
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))


class _Reporter:
    """Prints a line when the job's state changes, and a heartbeat when it has been quiet."""

    def __init__(self, progress: Callable[[str], None], heartbeat_s: float):
        self.progress, self.heartbeat_s = progress, heartbeat_s
        self.last: tuple | None = None
        self.last_time = time.monotonic()

    def show(self, job: JobView) -> None:
        state = (job.status, job.secondary_status, job.terminal, job.best.get("name"))
        if state != self.last:
            self.last, self.last_time = state, time.monotonic()
            self.progress(describe(job))

    def heartbeat(self, job: JobView | None) -> None:
        if job and time.monotonic() - self.last_time >= self.heartbeat_s:
            self.last_time = time.monotonic()
            self.progress(describe(job) + " (still waiting)")


def describe(job: JobView) -> str:
    parts = [job.status or "Pending (not yet synced by the controller)"]
    if job.secondary_status:
        parts.append(job.secondary_status)
    if job.best.get("name"):
        value = job.best.get("value")
        parts.append(f"best {job.best['name']}"
                     + (f" {job.best.get('objective')}={value}" if value is not None else ""))
    elapsed = format_elapsed(job.elapsed_s(datetime.now(timezone.utc)))
    return f"{job.name}: {' / '.join(parts)} [{elapsed}]"
