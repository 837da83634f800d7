"""In-job logging that never stops or slows training.

The trainer hands each ``metrics.jsonl`` record to :meth:`Tracker.log_step`, which only puts
it on a bounded queue. One background thread opens the runs (sinks.py) and writes them. A sink
that fails is retried a few times, then left alone for a while (one warning line on stderr per
outage) with its records kept in a bounded backlog, written once it answers again. A full queue
drops the record (counted, said once): training never waits on a tracking server. ``close``
waits a bounded time for what is queued; ``mtgrpo track`` fills anything missed afterwards.

Resume: a sink reports the last step its run holds (MLflow: the ``mtgrpo.last_step`` tag) and
the tracker logs only later steps; :meth:`truncate_to` tells it the checkpoint a resumed job
restarts from, so steps a crash made the job repeat are not logged twice.
"""

from __future__ import annotations

import collections
import functools
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mtgrpo.tracking.identity import RunIdentity
from mtgrpo.tracking.sinks import MODEL_TAG, numeric_values

QUEUE_SIZE = 10_000
RETRIES = 3
RETRY_WAIT_S = 0.5  # doubled after each try
COOLDOWN_S = 30.0  # how long a failed sink is left alone before the next try
CLOSE_TIMEOUT_S = 60.0  # MTGRPO_TRACKING_CLOSE_TIMEOUT_S overrides it


def _warn(line: str) -> None:
    print(f"mtgrpo: tracking: {line}", file=sys.stderr, flush=True)


def _close(state: "_SinkState", status: str) -> None:
    state.sink.close(status)


class _SinkState:
    def __init__(self, sink, backlog: int):
        self.sink = sink
        self.opened = False
        self.floor = 0  # the last step the run holds: later ones only are logged
        self.down_until = 0.0
        self.warned = False
        self.backlog: collections.deque = collections.deque(maxlen=backlog)
        self.dropped = 0


class Tracker:
    """Writes one job's run to every sink, from a background thread."""

    def __init__(self, sinks: Sequence[Any], identity: RunIdentity, *,
                 params: Mapping[str, str], tags: Mapping[str, str] | None = None,
                 queue_size: int = QUEUE_SIZE, retries: int = RETRIES,
                 retry_wait_s: float = RETRY_WAIT_S, cooldown_s: float = COOLDOWN_S,
                 warn: Callable[[str], None] = _warn):
        self.identity = identity
        self.params = dict(params)
        self.tags = dict(tags or {})
        self.retries, self.retry_wait_s, self.cooldown_s = retries, retry_wait_s, cooldown_s
        self.warn = warn
        self._states = [_SinkState(s, queue_size) for s in sinks]
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._floor = 0  # steps at or below it are not logged (resume)
        self._dropped = 0
        self._thread = threading.Thread(target=self._loop, name="mtgrpo-tracking", daemon=True)
        self._started = False

    # -- the trainer's side: never blocks ---------------------------------------------------------
    def start(self, resume_step: int = 0) -> "Tracker":
        self._floor = max(self._floor, int(resume_step))
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def truncate_to(self, step: int) -> None:
        """The job resumes from the checkpoint of ``step``: it logs steps after it again.

        Steps up to what a run already holds keep their first values (MLflow cannot delete a
        metric point); later ones are logged once. Call before the first repeated step."""
        self._put(("truncate", int(step)))

    def log_step(self, record: Mapping[str, Any]) -> None:
        """One metrics.jsonl record (``step`` plus values)."""
        self._put(("step", int(record["step"]), numeric_values(record)))

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self._put(("artifact", Path(path), folder))

    def log_summary(self, values: Mapping[str, float], step: int) -> None:
        self._put(("summary", dict(values), int(step)))

    def set_model_location(self, location: str) -> None:
        self._put(("tag", MODEL_TAG, location))

    def close(self, status: str = "FINISHED", timeout_s: float | None = None) -> bool:
        """Write what is queued (at most ``timeout_s``) and end the runs; True when all went."""
        if not self._started:
            return True
        if timeout_s is None:
            timeout_s = float(os.environ.get("MTGRPO_TRACKING_CLOSE_TIMEOUT_S", CLOSE_TIMEOUT_S))
        self._put(("close", status), force=True)
        self._thread.join(timeout_s)
        left = sum(len(s.backlog) for s in self._states) + self._queue.qsize()
        lost = self._dropped + sum(s.dropped for s in self._states)
        if self._thread.is_alive() or left or lost:
            self.warn(f"{left + lost} record(s) not written to the tracking server; "
                      f"`mtgrpo track {self.identity.name}` writes them from the job's output")
            return False
        return True

    def _put(self, item: tuple, force: bool = False) -> None:
        try:
            self._queue.put(item, block=force, timeout=1.0 if force else None)
        except queue.Full:
            if not self._dropped:
                self.warn("the queue is full (the tracking server is slow or down): dropping "
                          "records; training goes on")
            self._dropped += 1

    # -- the background thread --------------------------------------------------------------------
    def _loop(self) -> None:
        closing = None
        while True:
            try:
                item = self._queue.get(timeout=0.1 if closing else 1.0)
            except queue.Empty:
                item = None
            if item is not None:
                if item[0] == "close":
                    closing = item[1]
                elif item[0] == "truncate":
                    self._floor = max(self._floor, item[1])
                    for state in self._states:
                        state.floor = max(state.floor, item[1])
                else:
                    for state in self._states:
                        if len(state.backlog) == state.backlog.maxlen:
                            state.dropped += 1
                        state.backlog.append(item)
            for state in self._states:
                self._drain(state)
            # Closing: keep trying (close() bounds how long it waits) until every record went.
            if closing is not None and self._queue.empty() and \
                    not any(s.backlog for s in self._states):
                for state in self._states:
                    if state.opened:
                        self._try(state, functools.partial(_close, status=closing),
                                  "end the run")
                return

    def _drain(self, state: _SinkState) -> None:
        if time.monotonic() < state.down_until:
            return
        if not state.opened:
            if not self._try(state, self._open, "open the run"):
                return
        while state.backlog:
            item = state.backlog[0]
            if not self._try(state, functools.partial(self._apply, item=item),
                             f"write {item[0]}"):
                return
            state.backlog.popleft()

    def _open(self, state: _SinkState) -> None:
        last = state.sink.open(self.identity, self.params, self.tags)
        state.floor = max(self._floor, int(last or 0))
        state.opened = True

    def _apply(self, state: _SinkState, item: tuple) -> None:
        kind = item[0]
        if kind == "step":
            if item[1] > state.floor:
                state.sink.log(item[1], item[2])
                state.floor = item[1]
        elif kind == "artifact":
            state.sink.artifact(item[1], item[2])
        elif kind == "summary":
            state.sink.summary(item[1], item[2])
        elif kind == "tag":
            state.sink.tag(item[1], item[2])

    def _try(self, state: _SinkState, action: Callable[[_SinkState], None], what: str) -> bool:
        wait = self.retry_wait_s
        for attempt in range(self.retries):
            try:
                action(state)
                if state.warned:
                    self.warn(f"{state.sink.name} answers again; catching up")
                    state.warned = False
                return True
            except Exception as err:  # noqa: BLE001 - a tracking failure never reaches training
                error = err
                if attempt + 1 < self.retries:
                    time.sleep(wait)
                    wait *= 2
        state.down_until = time.monotonic() + self.cooldown_s
        if not state.warned:
            first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
            self.warn(f"{state.sink.name} at {state.sink.where}: could not {what} "
                      f"({type(error).__name__}: {first}); training goes on, retrying in "
                      f"{self.cooldown_s:g} s")
            state.warned = True
        return False
