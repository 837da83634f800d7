"""Bounded-staleness overlap of rollouts and learning (``trainer.max_staleness: 1``).

While the learner trains on step k's generation batch, a background thread rolls out step
k+1's batch with the weights the sampler holds (those of the end of step k-1). The pieces:

- ``PolicyClock``: the policy version the sampler holds (the optimizer step whose weights were
  pushed last) and a readers-writer lock around it. A rollout batch is a reader for all of its
  turns; a weight push is the writer: it waits until no rollout is in flight and holds new
  ones back until it is done. So every request, and every episode, sees one version.
- ``VersionedSampler``: wraps the sampler; records the clock's version at the start and the end
  of every request (``PolicyClock.requests``; a test checks they are equal) and stops a
  cancelled rollout at its next request.
- ``Prefetch``: one background rollout of a list of prompt keys; its result, the version it
  was sampled with, its seconds, or its exception (re-raised in the training thread when the
  batch is used, so a failure ends the run at the same step as without the overlap).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from typing import Any, Callable, Iterator, Sequence

from mtgrpo.rollout.client import SamplerError


class PrefetchCancelled(SamplerError):
    """A background rollout was stopped (a stop request, the end of training)."""


class PolicyClock:
    """The sampler's policy version, with rollouts as readers and weight pushes as writer."""

    def __init__(self, version: int = 0):
        self.version = int(version)
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._cancel = threading.Event()
        # (version at the start, version at the end) of the latest sampler requests.
        self.requests: deque[tuple[int, int]] = deque(maxlen=10_000)

    @contextlib.contextmanager
    def sampling(self) -> Iterator[int]:
        """A rollout in flight; yields the version it samples with (no push meanwhile)."""
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1
            version = self.version
        try:
            yield version
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def updating(self, version: int) -> Iterator[None]:
        """A weight push: waits for in-flight rollouts, blocks new ones, then sets ``version``."""
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._writing = True
            while self._readers:
                self._cond.wait()
        try:
            yield
            self.version = int(version)
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()

    def cancel(self) -> None:
        """Make in-flight rollouts of a ``VersionedSampler`` stop at their next request."""
        self._cancel.set()

    def resume(self) -> None:
        self._cancel.clear()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


class VersionedSampler:
    """A sampler whose every request records the clock's version at its start and end."""

    def __init__(self, sampler, clock: PolicyClock):
        self.sampler = sampler
        self.clock = clock

    async def generate(self, prompts, **kwargs: Any):
        if self.clock.cancelled:
            raise PrefetchCancelled("background rollout stopped")
        start = self.clock.version
        samples = await self.sampler.generate(prompts, **kwargs)
        self.clock.requests.append((start, self.clock.version))
        return samples

    def close(self) -> None:
        self.sampler.close()

    def __getattr__(self, name: str):  # base_url, logprobs settings, ... of the real sampler
        return getattr(self.sampler, name)

    def __repr__(self) -> str:
        return f"VersionedSampler({self.sampler!r})"


class Prefetch:
    """One rollout of ``keys`` on a background thread, sampled under ``clock.sampling()``."""

    def __init__(self, keys: Sequence[str], records: Sequence[Any],
                 rollout: Callable[[list], list], clock: PolicyClock):
        self.keys = list(keys)
        self.episodes: list | None = None
        self.version: int | None = None
        self.seconds = 0.0
        self.error: BaseException | None = None
        self._records = list(records)
        self._rollout = rollout
        self._clock = clock
        self._thread = threading.Thread(target=self._run, daemon=True, name="mtgrpo-prefetch")
        self._thread.start()

    def _run(self) -> None:
        start = time.perf_counter()
        try:
            with self._clock.sampling() as version:
                episodes = self._rollout(self._records)
            self.version, self.episodes = version, episodes
        except BaseException as err:  # noqa: BLE001 - re-raised in the training thread
            self.error = err
        self.seconds = time.perf_counter() - start

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> float:
        """Wait for the rollout to end (at most ``timeout`` s); the seconds waited."""
        start = time.perf_counter()
        self._thread.join(timeout)
        return time.perf_counter() - start
