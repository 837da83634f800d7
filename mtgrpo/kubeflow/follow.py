"""``mtgrpo logs trainjob/NAME --follow``: one node's log until the TrainJob ends.

Why polling and not ``follow=True``: a followed log stream ends when the container ends, says
nothing when JobSet replaces the pod (a restart makes a new pod of a new name), and can hang
silently on a half-open connection. Short reads every ``poll_s`` seconds each end on their own,
let the loop ask the TrainJob's state between reads, and notice the node's newest pod change.

The Python client's ``read_namespaced_pod_log`` has no ``sinceTime``, so each read after
the first of a pod asks for the last ``since_seconds`` (the time since the
previous read by *our* clock, plus a margin, so the node's clock offset does not matter) with
``timestamps=True``; lines at or before the last printed timestamp are dropped, so the
overlapping window prints nothing twice (lines with the very same timestamp are counted). A
trailing line without its newline waits for the next read (the last read prints it).

Order, as for SageMaker (:mod:`mtgrpo.operate.logs`): the TrainJob's state is read *before*
the pod's log, so the read after the state first says Complete/Failed is the last one and gets
everything written up to the end. When the newest pod of the rank changes, the old pod is read
once more (if it still exists) and then the new pod from its first line.
"""

from __future__ import annotations

import math
import re
import time
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Callable

from mtgrpo.errors import Problem, Unreachable, UserError
from mtgrpo.kubeflow import contract as kc
from mtgrpo.kubeflow.operate import COMPLETE, FAILED, RANK_LABEL, state

MARGIN_S = 10  # added to each window: request latency and whole-second rounding
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) ?")


def stamp_key(line: str) -> tuple[tuple[int, int] | None, str]:
    """((epoch seconds, nanoseconds), text) of a ``timestamps=True`` line; (None, line) if the
    line has no RFC 3339 prefix."""
    match = _STAMP.match(line)
    if not match:
        return None, line
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    seconds = int(datetime.fromisoformat(match.group(1) + zone).timestamp())
    nanos = int((match.group(2) or "0").ljust(9, "0"))
    return (seconds, nanos), line[match.end():]


class PodCursor:
    """Where the printing of one pod's log stands."""

    def __init__(self, pod: str):
        self.pod = pod
        self.last: tuple[int, int] | None = None  # timestamp of the last printed line
        self.same = 0  # lines printed with exactly that timestamp
        self.read_at: float | None = None  # our clock when the previous read was sent

    def since_seconds(self, now: float) -> int | None:
        if self.read_at is None or self.last is None:
            return None  # from the first line
        return max(1, math.ceil(now - self.read_at) + MARGIN_S)

    def new_lines(self, text: str, final: bool) -> list[str]:
        """The lines of ``text`` not printed yet; remembers them as printed."""
        lines = text.split("\n")
        tail = lines.pop()  # "" after a final newline, else a line still being written
        if tail and final:
            lines.append(tail)
        out, seen_same = [], 0
        for line in lines:
            key, body = stamp_key(line)
            if key is not None and self.last is not None:
                if key < self.last:
                    continue
                if key == self.last:
                    seen_same += 1
                    if seen_same <= self.same:
                        continue
            if key is not None:
                if key == self.last:
                    self.same += 1
                else:
                    self.last, self.same = key, 1
                    seen_same = 1
            out.append(body)
        return out


def follow(kube: Any, name: str, *, node: int, write: Callable[[str], None],
           note: Callable[[str], None], poll_s: float = 5.0,
           sleep: Callable[[float], None] | None = None,
           clock: Callable[[], float] = time.monotonic) -> int:
    """Print node ``node``'s log until the TrainJob has ended; 0, or 1 when it was deleted."""
    from kubernetes import client

    core = client.CoreV1Api(kube.api.api_client)
    where = f"namespace {kube.namespace}"
    sleep = sleep or _pause
    try:
        obj = _job(kube, name)
    except _Transient as err:
        raise Unreachable(Problem(where, f"trainjob/{name}", f"the API server could not be "
                                  f"read ({err})", "a reachable cluster")) from None
    if obj is None:
        raise UserError(Problem(where, f"trainjob/{name}", "no TrainJob of that name",
                                "kubectl get trainjobs"))
    nodes = ((obj.get("spec") or {}).get("trainer") or {}).get("numNodes")
    if isinstance(nodes, int) and not 0 <= node < nodes:
        raise UserError(Problem(where, f"trainjob/{name}", f"--node {node} is not a node "
                                f"rank of this TrainJob", f"0..{nodes - 1}"))
    follower = _Follower(core, kube, name, node, write, note, clock)
    failures = 0
    while True:
        try:
            if obj is None:
                obj = _job(kube, name) or {}  # asked before the read: a last read after the end
            done = follower.step(obj)
            failures = 0
        except _Transient as err:
            failures += 1
            if failures > MAX_FAILURES:
                raise Unreachable(Problem(where, f"trainjob/{name}", f"the API server could "
                                          f"not be read {failures} times in a row ({err})",
                                          "a reachable cluster; the job runs on: follow it "
                                          "again")) from None
            note(f"reading trainjob/{name} failed ({err}); trying again")
            done = None
        if done is not None:
            return done
        sleep(poll_s)
        obj = None


MAX_FAILURES = 10  # polls in a row the API server may fail (an upgrade, a network cut)
REQUEST_TIMEOUT_S = 60  # no read may hang on a half-open connection


class _Transient(Exception):
    """The API server did not answer (connection, timeout, 5xx): try again at the next poll."""


def _pause(seconds: float) -> None:
    time.sleep(seconds)


class _Follower:
    def __init__(self, core, kube, name, node, write, note, clock):
        self.core, self.kube, self.name, self.node = core, kube, name, node
        self.write, self.note, self.clock = write, note, clock
        self.cursor: PodCursor | None = None
        self.waiting_noted = False

    def step(self, obj: dict) -> int | None:
        """One poll: None while the TrainJob runs, else the exit code."""
        if not obj:
            if self.cursor is not None:
                self._read(final=True)
            self.note(f"TrainJob {self.name} is gone (deleted)")
            return 1
        kind, message = state(obj)
        ended = kind in (COMPLETE, FAILED)
        newest = self._newest_pod()
        if newest is not None and (self.cursor is None or newest != self.cursor.pod):
            if self.cursor is not None:  # a JobSet restart: what the old pod still has, then on
                self._read(final=True)
                self.note(f"pod {self.cursor.pod} was replaced by {newest}")
            else:
                self.note(f"following pod {newest} (node {self.node})")
            self.cursor = PodCursor(newest)
        if self.cursor is not None:
            self._read(final=ended)
        elif not self.waiting_noted and not ended:
            self.note(f"TrainJob {self.name}: {kind}; waiting for the pod of node {self.node}")
            self.waiting_noted = True
        if not ended:
            return None
        if self.cursor is None:
            raise UserError(Problem(f"namespace {self.kube.namespace}", f"trainjob/{self.name}",
                                    f"the TrainJob is {kind} and has no pod of node "
                                    f"{self.node}", "kubectl describe trainjob " + self.name))
        self.note(f"TrainJob {self.name}: {kind} ({message})")
        return 0

    def _newest_pod(self) -> str | None:
        selector = f"{kc.JOB_NAME_LABEL}={self.name},{RANK_LABEL}={self.node}"
        with _answers(self.kube, self.name):
            pods = self.core.list_namespaced_pod(self.kube.namespace, label_selector=selector,
                                                 _request_timeout=REQUEST_TIMEOUT_S).items
        pods = [p for p in pods if not p.metadata.deletion_timestamp] or pods
        if not pods:
            return None
        return max(pods, key=lambda p: (str(p.metadata.creation_timestamp or ""),
                                        p.metadata.name)).metadata.name

    def _read(self, *, final: bool) -> None:
        from kubernetes.client.rest import ApiException

        cursor = self.cursor
        kwargs: dict[str, Any] = {"container": kc.CONTAINER, "timestamps": True,
                                  "_request_timeout": REQUEST_TIMEOUT_S}
        sent = self.clock()
        since = cursor.since_seconds(sent)
        if since is not None:
            kwargs["since_seconds"] = since
        try:
            with _answers(self.kube, cursor.pod, passthrough=(400, 404)):
                text = self.core.read_namespaced_pod_log(cursor.pod, self.kube.namespace,
                                                         **kwargs)
        except ApiException:
            # 400: the container has not started yet (ContainerCreating); 404: the pod is
            # gone (replaced between the list and this read). Both: nothing to print now.
            return
        cursor.read_at = sent
        for line in cursor.new_lines(text or "", final):
            self.write(line)


def _job(kube: Any, name: str) -> dict | None:
    from mtgrpo.kubeflow.operate import GROUP, PLURAL, VERSION

    with _answers(kube, name, missing_ok=True) as found:
        found.append(kube.api.get_namespaced_custom_object(
            GROUP, VERSION, kube.namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT_S))
    return found[0] if found else None


@contextmanager
def _answers(kube: Any, name: str, missing_ok: bool = False, passthrough: tuple = ()):
    """API failures: a 404 is nothing found with ``missing_ok``; ``passthrough`` statuses reach
    the caller as ApiException; connection problems and 5xx are transient (the next poll tries
    again); the rest (401, 403, ...) is a one-line UserError."""
    import urllib3
    from kubernetes.client.rest import ApiException

    found: list = []
    try:
        yield found
    except ApiException as err:
        if err.status == 404 and missing_ok:
            return
        if err.status in passthrough:
            raise
        if err.status >= 500:
            raise _Transient(f"{err.status} {err.reason}") from None
        raise _refused(kube, name, err) from None
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise _Transient(str(err) or type(err).__name__) from None


def _refused(kube: Any, name: str, err: Any) -> UserError:
    return UserError(Problem(f"namespace {kube.namespace}", f"trainjob/{name}",
                             f"the API server answered {err.status} {err.reason}",
                             "RBAC to get trainjobs, list pods and get pods/log"))
