"""``mtgrpo logs trainjob/NAME --follow``: one node's log until the TrainJob ends.

Why polling and not ``follow=True``: a followed log stream ends when the container ends, says
nothing when JobSet replaces the pod (a restart makes a new pod of a new name), and can hang
silently on a half-open connection. Short reads every ``poll_s`` seconds each end on their own,
let the loop ask the TrainJob's state between reads, and notice the node's newest pod change.

Each read after the first of a pod asks for the last ``since_seconds`` (the time since the
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
from datetime import datetime
from typing import Any, Callable

from mtgrpo.errors import Problem, UserError
from mtgrpo.kubeflow import contract as kc
from mtgrpo.kubeflow.operate import COMPLETE, FAILED, RANK_LABEL, get, state

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
           sleep: Callable[[float], None] = time.sleep,
           clock: Callable[[], float] = time.monotonic) -> int:
    """Print node ``node``'s log until the TrainJob has ended; 0, or 1 when it was deleted."""
    from kubernetes import client

    core = client.CoreV1Api(kube.api.api_client)
    where = f"namespace {kube.namespace}"
    obj = get(kube, name)
    if obj is None:
        raise UserError(Problem(where, f"trainjob/{name}", "no TrainJob of that name",
                                "kubectl get trainjobs"))
    nodes = ((obj.get("spec") or {}).get("trainer") or {}).get("numNodes")
    if isinstance(nodes, int) and not 0 <= node < nodes:
        raise UserError(Problem(where, f"trainjob/{name}", f"--node {node} is not a node "
                                f"rank of this TrainJob", f"0..{nodes - 1}"))
    cursor: PodCursor | None = None
    waiting_noted = False
    while True:
        if obj is None:
            obj = get(kube, name)  # asked before the read: one last read after the end
        if obj is None:
            if cursor is not None:
                _read(core, kube, cursor, write, clock, final=True)
            note(f"TrainJob {name} is gone (deleted)")
            return 1
        kind, message = state(obj)
        ended = kind in (COMPLETE, FAILED)
        newest = _newest_pod(core, kube, name, node)
        if newest is not None and (cursor is None or newest != cursor.pod):
            if cursor is not None:  # a JobSet restart: what the old pod still has, then on
                _read(core, kube, cursor, write, clock, final=True)
                note(f"pod {cursor.pod} was replaced by {newest}")
            else:
                note(f"following pod {newest} (node {node})")
            cursor = PodCursor(newest)
        if cursor is not None:
            _read(core, kube, cursor, write, clock, final=ended)
        elif not waiting_noted and not ended:
            note(f"TrainJob {name}: {kind}; waiting for the pod of node {node}")
            waiting_noted = True
        if ended:
            if cursor is None:
                raise UserError(Problem(where, f"trainjob/{name}", f"the TrainJob is {kind} "
                                        f"and has no pod of node {node}",
                                        "kubectl describe trainjob " + name))
            note(f"TrainJob {name}: {kind} ({message})")
            return 0
        sleep(poll_s)
        obj = None


def _newest_pod(core: Any, kube: Any, name: str, node: int) -> str | None:
    from kubernetes.client.rest import ApiException

    selector = f"{kc.JOB_NAME_LABEL}={name},{RANK_LABEL}={node}"
    try:
        pods = core.list_namespaced_pod(kube.namespace, label_selector=selector).items
    except ApiException as err:
        raise _refused(kube, name, err) from None
    pods = [p for p in pods if not p.metadata.deletion_timestamp] or pods
    if not pods:
        return None
    return max(pods, key=lambda p: (str(p.metadata.creation_timestamp or ""),
                                    p.metadata.name)).metadata.name


def _read(core: Any, kube: Any, cursor: PodCursor, write: Callable[[str], None],
          clock: Callable[[], float], *, final: bool) -> None:
    from kubernetes.client.rest import ApiException

    kwargs: dict[str, Any] = {"container": kc.CONTAINER, "timestamps": True}
    sent = clock()
    since = cursor.since_seconds(sent)
    if since is not None:
        kwargs["since_seconds"] = since
    try:
        text = core.read_namespaced_pod_log(cursor.pod, kube.namespace, **kwargs)
    except ApiException as err:
        # 400: the container has not started yet (ContainerCreating); 404: the pod is gone
        # (replaced between the list and this read). Both: nothing to print now.
        if err.status in (400, 404):
            return
        raise _refused(kube, cursor.pod, err) from None
    cursor.read_at = sent
    for line in cursor.new_lines(text or "", final):
        write(line)


def _refused(kube: Any, name: str, err: Any) -> UserError:
    return UserError(Problem(f"namespace {kube.namespace}", f"trainjob/{name}",
                             f"the API server answered {err.status} {err.reason}",
                             "RBAC to get trainjobs, list pods and get pods/log"))
