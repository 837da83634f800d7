"""Runs the agent once per episode against the endpoint: concurrency, timeouts, failures.

``AgentRunner.rollout(records, num_generations)`` opens an episode on the endpoint for every
(record, generation), runs up to ``concurrency`` agents at once, each bounded by
``timeout_s``, and returns one :class:`~mtgrpo.agents.recorder.AgentEpisode` per episode in
order (episode ``i * num_generations + j`` is generation ``j`` of record ``i``). An agent that
raises, times out, exits non-zero or returns something unusable costs its episode only: the
episode keeps the calls it made, is marked failed (``error``) and scored like the others, and
one warning line is logged; the run goes on. A failure of the rollout backend itself (the vLLM
server died or stopped answering) is not the agent's: it is raised after the rollout, and the
run stops with its one-line reason as it does without an agent.

A Python agent is called as ``agent(base_url, record, make_client)``; ``make_client()`` gives
an ``openai.AsyncOpenAI`` on the episode's base URL (no retries: a refused call is an answer;
``make_client(sync=True)``: an ``openai.OpenAI``, for a plain-function agent).
It returns a number (the reward), a string (the answer, for the task's rubric) or None (the
rubric reads the answer from the last assistant turn). A command agent gets
``OPENAI_BASE_URL``/``MTGRPO_BASE_URL`` (the episode's base URL), ``OPENAI_API_KEY``,
``MTGRPO_EPISODE_ID`` and ``MTGRPO_RECORD`` (the record as JSON) in its environment, and prints
the reward or the answer as its last line of output.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from mtgrpo.agents.endpoint import AgentEndpoint
from mtgrpo.agents.loading import AgentSpec
from mtgrpo.agents.recorder import AgentEpisode, EpisodeRecorder
from mtgrpo.rollout.client import run_sync
from mtgrpo.trainer.types import QARecord

log = logging.getLogger(__name__)

API_KEY = "mtgrpo-local"  # clients insist on a key; the endpoint listens on 127.0.0.1 only


class AgentFailure(RuntimeError):
    """Why one episode's agent failed (one line)."""


@dataclass
class RunnerStats:
    """What the last ``rollout`` did, for metrics."""

    seconds: float = 0.0
    episodes: int = 0
    failed: int = 0
    timed_out: int = 0
    breaks: int = 0
    calls: int = 0
    dropped_tokens: int = 0
    errors: list[str] = field(default_factory=list)


def record_json(record: QARecord) -> str:
    return json.dumps({"id": record.id, "question": record.question,
                       "aliases": list(record.aliases), "info": dict(record.info)},
                      ensure_ascii=False, sort_keys=True, default=str)


class AgentRunner:
    """Plays episodes with one agent through one endpoint."""

    def __init__(self, endpoint: AgentEndpoint, agent: AgentSpec, *, concurrency: int = 32,
                 timeout_s: float = 300.0, parser=None):
        self.endpoint = endpoint
        self.agent = agent
        self.concurrency = max(1, int(concurrency))
        self.timeout_s = float(timeout_s)
        self.parser = parser if parser is not None else endpoint.renderer.parser
        self._ids = itertools.count()
        self.last_stats = RunnerStats()

    def make_client_factory(self, base_url: str, http=None):
        """``make_client(**options)``: an ``openai.AsyncOpenAI`` on ``base_url``. ``http``: the
        rollout's shared connection pool (a client of its own per episode would build a TLS
        context and a pool each: tens of ms of CPU per episode, docs/rollouts.md)."""
        def make_client(*, sync: bool = False, **kwargs: Any):
            import openai

            options: dict[str, Any] = dict(base_url=base_url, api_key=API_KEY, max_retries=0,
                                           timeout=self.timeout_s)
            if sync:  # a plain-function agent (run in a thread): a blocking client of its own
                options.update(kwargs)
                return openai.OpenAI(**options)
            if http is not None:
                options["http_client"] = http
            options.update(kwargs)
            return openai.AsyncOpenAI(**options)

        return make_client

    def _http(self):
        import openai

        # openai's own HTTP client class (openai 3 runs on httpx2, not httpx).
        return openai.DefaultAsyncHttpxClient(timeout=self.timeout_s)

    async def rollout(self, records: Sequence[QARecord],
                      num_generations: int = 1) -> list[AgentEpisode]:
        started = time.perf_counter()
        gate = asyncio.Semaphore(self.concurrency)
        jobs = [(g, r) for g, r in enumerate(records) for _ in range(num_generations)]

        async def one(group: int, record: QARecord, http) -> AgentEpisode:
            async with gate:
                return await self.play(record, group, http=http)

        http = None if self.agent.command else self._http()
        try:
            episodes = list(await asyncio.gather(*(one(g, r, http) for g, r in jobs)))
        finally:
            if http is not None:
                await http.aclose()
        failure, self.endpoint.backend_error = self.endpoint.backend_error, None
        if failure is not None:  # not the agents' fault: the run stops, as without an agent
            raise failure
        stats = RunnerStats(seconds=time.perf_counter() - started, episodes=len(episodes))
        for ep in episodes:
            stats.calls += ep.calls
            stats.breaks += ep.breaks
            stats.dropped_tokens += ep.dropped_tokens
            if ep.failed:
                stats.failed += 1
                stats.timed_out += (ep.error or "").startswith("timed out")
                stats.errors.append(f"{ep.episode_id}: {ep.error}")
        self.last_stats = stats
        return episodes

    def rollout_sync(self, records: Sequence[QARecord],
                     num_generations: int = 1) -> list[AgentEpisode]:
        return run_sync(self.rollout(records, num_generations))

    async def play(self, record: QARecord, group: int = 0, *, http=None) -> AgentEpisode:
        """One episode: open it, run the agent within the timeout, close it, never raise."""
        episode_id = f"ep{next(self._ids)}"
        renderer = self.endpoint.renderer
        recorder = EpisodeRecorder(episode_id, record, group, renderer.decode)
        base_url = self.endpoint.open_episode(recorder)
        start = time.perf_counter()
        answer = reward = error = None
        try:
            result = await asyncio.wait_for(self._run(base_url, record, episode_id, http),
                                            self.timeout_s)
            answer, reward = self._result(result)
        except asyncio.TimeoutError:
            error = f"timed out after {self.timeout_s:g}s (agent_timeout_s)"
        except AgentFailure as err:
            error = str(err)
        except Exception as err:  # noqa: BLE001 - an agent's failure costs its episode only
            error = " ".join(f"raised {type(err).__name__}: {err}".split())[:500]
        finally:
            self.endpoint.close_episode(episode_id)
        if error is not None:
            log.warning("agent episode %s (record %s) failed: %s", episode_id, record.id, error)
        empty = () if recorder.sequences else self._question_ids(record)
        return recorder.episode(answer=answer, agent_reward=reward, error=error,
                                seconds=time.perf_counter() - start, empty_prompt=empty)

    def _question_ids(self, record: QARecord) -> list[int]:
        from mtgrpo.agents.chat import Message

        return self.endpoint.renderer.render([Message("user", record.question)], [])

    def _result(self, result: Any) -> tuple[str | None, float | None]:
        import math

        if result is None:
            return None, None
        if isinstance(result, bool):
            raise AgentFailure(f"returned a bool ({result}); return a number, a string or None")
        if isinstance(result, (int, float)):
            if not math.isfinite(result):
                raise AgentFailure(f"returned the reward {result}")
            return None, float(result)
        if isinstance(result, str):
            parsed = self.parser.parse(result).answer if self.parser is not None else None
            return (parsed if parsed is not None else result.strip()), None
        raise AgentFailure(f"returned a {type(result).__name__}; return a number (the reward), "
                           "a string (the answer) or None")

    async def _run(self, base_url: str, record: QARecord, episode_id: str, http=None) -> Any:
        if self.agent.command:
            return await self._run_command(base_url, record, episode_id)
        call = self.agent.call
        make_client = self.make_client_factory(base_url, http)
        if inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
                type(call).__call__):  # an async function, or an object with async __call__
            return await call(base_url, record, make_client)
        # A plain function runs in a thread (an agent framework's blocking run loop); it is
        # abandoned, not stopped, when it times out: its later calls get 404.
        result = await asyncio.to_thread(call, base_url, record, make_client)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _run_command(self, base_url: str, record: QARecord, episode_id: str) -> Any:
        env = dict(os.environ, OPENAI_BASE_URL=base_url, MTGRPO_BASE_URL=base_url,
                   OPENAI_API_KEY=API_KEY, MTGRPO_EPISODE_ID=episode_id,
                   MTGRPO_RECORD=record_json(record))
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.agent.command, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                start_new_session=True)
        except OSError as err:
            raise AgentFailure(f"could not start {self.agent.command[0]!r}: {err}") from None
        try:
            out, errout = await proc.communicate()
        except BaseException:  # the timeout (cancelled) or a stop: no process left behind
            _kill_group(proc)
            await proc.wait()
            raise
        if proc.returncode != 0:
            tail = " ".join(errout.decode(errors="replace").split())[-300:]
            raise AgentFailure(f"exited with status {proc.returncode}: {tail}")
        lines = [x.strip() for x in out.decode(errors="replace").splitlines() if x.strip()]
        if not lines:
            return None
        try:
            return float(lines[-1])
        except ValueError:
            return lines[-1]


def _kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
