"""The multi-turn tool environment: prompts, sampling turns, tool calls, token bookkeeping.

``ToolEnvironment.rollout`` plays every episode of a batch in lock-step: each turn sends all
still-active episodes to the sampler in ONE ``generate`` call (so the server batches them),
parses each turn, runs this turn's tool calls concurrently (``async`` tools awaited together on
the loop, plain ones in a thread pool), and appends the environment's tokens. Token ids are
never re-tokenized: an episode's next prompt is its prompt ids followed by every earlier turn's
ids, exactly as sampled or appended.

The environment tokens after an assistant turn (close the assistant message, the tool-result
message, open the next assistant message) come from the tokenizer's own chat template,
rendered once with placeholders; nothing about ChatML is hard-coded.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from mtgrpo.errors import Problem, UserError
from mtgrpo.rollout.client import run_sync
from mtgrpo.trainer.tools.base import error_text
from mtgrpo.trainer.types import Episode, ParsedTurn, QARecord, Turn

# One executed call: (result text, ok, timed out).
_Result = tuple[str, bool, bool]

log = logging.getLogger(__name__)

_ASSISTANT = "MTGRPOASSISTANTPLACEHOLDER"
_RESULT = "MTGRPORESULTPLACEHOLDER"
_SYSTEM = "MTGRPOSYSTEMPLACEHOLDER"
_USER = "MTGRPOUSERPLACEHOLDER"


class TemplateError(ValueError):
    """The tokenizer's chat template cannot frame a tool-result message."""


@dataclass(frozen=True)
class EnvironmentFrame:
    """Chat-template text between an assistant turn's content and the next assistant turn.

    ``before`` closes the assistant message and opens the tool-result message; ``after``
    closes it and opens the next assistant message (the generation prompt).
    """

    before: str
    after: str

    @classmethod
    def from_tokenizer(cls, tokenizer, *, tool_role: str = "user") -> "EnvironmentFrame":
        messages = [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _USER},
                    {"role": "assistant", "content": _ASSISTANT},
                    {"role": tool_role, "content": _RESULT}]
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)
        except Exception as err:  # noqa: BLE001 - templates raise anything (jinja, exceptions)
            raise TemplateError(f"the chat template cannot render a '{tool_role}' message "
                                f"after an assistant message: {err}") from None
        if _ASSISTANT not in text or _RESULT not in text:
            raise TemplateError(f"the chat template drops the assistant or '{tool_role}' "
                                "message content; choose another tool-result role")
        tail = text[text.index(_ASSISTANT) + len(_ASSISTANT):]
        before, _, after = tail.partition(_RESULT)
        return cls(before, after)

    def text(self, content: str, *, strip_prefix: str = "") -> str:
        """The environment text for one tool-result message with ``content``.

        ``strip_prefix``: text the sampled turn already ended with (its EOS token, e.g.
        ``<|im_end|>``), which must not be appended twice.
        """
        before = self.before
        if strip_prefix and before.startswith(strip_prefix):
            before = before[len(strip_prefix):]
        return before + content + self.after


@dataclass
class RolloutStats:
    """What the last ``rollout`` did, for metrics."""

    seconds: float = 0.0
    sampler_seconds: float = 0.0
    tool_seconds: float = 0.0
    turns: int = 0  # sampler calls (lock-step turns)
    sampled_tokens: int = 0
    tool_calls: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class ToolEnvironment:
    """A tool-using multi-turn environment over one tokenizer, parser and tool set.

    Limits: ``max_turns`` assistant turns (the answer turn included), ``max_tool_calls`` executed
    calls, ``max_tokens_per_turn`` sampled tokens per turn, ``max_completion_length`` tokens for
    the whole completion (sampled and environment tokens), ``max_prompt_length`` prompt tokens
    (records over it are refused at load: :meth:`check_prompts`). ``tool_role`` is the chat
    role of tool-result messages: ``user`` as in the MT-GRPO reference, or ``tool`` for
    templates that render it. Bounds on tools: ``tool_timeout_s`` per call,
    ``tool_result_max_chars`` per result (cut before tokenizing).
    """

    def __init__(self, tokenizer, parser, tools: Mapping[str, Any], *, max_turns: int,
                 max_tool_calls: int, max_tokens_per_turn: int, max_completion_length: int,
                 max_prompt_length: int, temperature: float, top_p: float,
                 tool_workers: int = 16, tool_role: str = "user", tool_timeout_s: float = 30.0,
                 tool_result_max_chars: int = 8000):
        self.tokenizer = tokenizer
        self.parser = parser
        self.tools = dict(tools)
        self.max_turns = max_turns
        self.max_tool_calls = max_tool_calls
        self.max_tokens_per_turn = max_tokens_per_turn
        self.max_completion_length = max_completion_length
        self.max_prompt_length = max_prompt_length
        self.temperature = temperature
        self.top_p = top_p
        self.tool_workers = max(1, tool_workers)
        self.tool_timeout_s = float(tool_timeout_s)
        self.tool_result_max_chars = int(tool_result_max_chars)
        self.frame = EnvironmentFrame.from_tokenizer(tokenizer, tool_role=tool_role)
        self.system_prompt = parser.system_prompt(list(self.tools.values()))
        self.stop = list(parser.stop)
        eos = tokenizer.eos_token_id
        self._eos = {eos: tokenizer.convert_ids_to_tokens(eos)} if eos is not None else {}
        self._prompt_cache: dict[tuple[str, str], list[int]] = {}
        self._helpers: _Helpers | None = None  # tool helper threads, started on first use
        self.last_stats = RolloutStats()

    @classmethod
    def from_config(cls, cfg, tokenizer, tools: Mapping[str, Any], *, parser=None,
                    **overrides: Any) -> "ToolEnvironment":
        """Build from a ``TrainerConfig`` (``tool_format`` picks the parser)."""
        if parser is None:
            from mtgrpo.trainer.parsers import get_parser

            parser = get_parser(cfg.tool_format)
        kwargs = dict(max_turns=cfg.max_turns, max_tool_calls=cfg.max_tool_calls,
                      max_tokens_per_turn=cfg.max_tokens_per_turn,
                      max_completion_length=cfg.max_completion_length,
                      max_prompt_length=cfg.max_prompt_length, temperature=cfg.temperature,
                      top_p=cfg.top_p, tool_timeout_s=cfg.tool_timeout_s,
                      tool_result_max_chars=cfg.tool_result_max_chars)
        kwargs.update(overrides)
        return cls(tokenizer, parser, tools, **kwargs)

    # -- prompts --------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_text(self, question: str) -> str:
        messages = [{"role": "system", "content": self.system_prompt},
                    {"role": "user", "content": question}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)

    def prompt_ids(self, record: QARecord) -> list[int]:
        """The record's prompt, tokenized once. Records over ``max_prompt_length`` are refused
        at load (:meth:`check_prompts`); one that was not checked is left-truncated."""
        key = (record.id, record.question)
        if key not in self._prompt_cache:
            ids = self.encode(self.prompt_text(record.question))
            if len(ids) > self.max_prompt_length:
                log.warning("prompt of record %s has %d tokens; keeping the last %d "
                            "(max_prompt_length)", record.id, len(ids), self.max_prompt_length)
                ids = ids[-self.max_prompt_length:]
            self._prompt_cache[key] = ids
        return list(self._prompt_cache[key])

    def check_prompts(self, records: Sequence[QARecord]) -> None:
        """Refuse records whose prompt (system prompt, question, template) exceeds
        ``max_prompt_length`` tokens: one ``UserError`` with a line per record, naming its
        file and line (``QARecord.where``) and its size. A huge question is measured on a
        prefix, so it is never tokenized whole."""
        problems = []
        limit = self.max_prompt_length
        # ~4 characters a token; a prefix of 16 a token is over the budget for any real text.
        prefix = 16 * limit
        for record in records:
            question = record.question
            ids = self.encode(self.prompt_text(question[:prefix]))
            if len(ids) <= limit:
                continue
            cut = len(question) > prefix
            self._prompt_cache.pop((record.id, record.question), None)
            size = (f"at least {len(ids)} tokens" if cut else f"{len(ids)} tokens") + \
                f" ({len(question)} characters of question)"
            problems.append(Problem(record.where or f"record {record.id}", "question",
                                    f"the prompt is {size}, over max_prompt_length {limit}",
                                    "a shorter question, or a larger max_prompt_length"))
        if problems:
            shown = problems[:20]
            notes = [f"... and {len(problems) - 20} more records over max_prompt_length"] \
                if len(problems) > 20 else []
            raise UserError(shown, notes=notes)

    def environment_ids(self, result: str, sampled: Sequence[int]) -> tuple[str, list[int]]:
        """The text and token ids appended after an assistant turn for one tool result."""
        strip = self._eos.get(sampled[-1], "") if sampled else ""
        text = self.frame.text(self.parser.format_tool_result(result), strip_prefix=strip)
        return text, self.encode(text)

    # -- the loop -------------------------------------------------------------------------------
    async def rollout(self, records: Sequence[QARecord], num_generations: int, sampler,
                      *, seed: int | None = None) -> list[Episode]:
        """Play ``num_generations`` episodes per record; episode ``i * num_generations + j`` is
        generation ``j`` of record ``i`` (``Episode.group == i``)."""
        started = time.perf_counter()
        stats = RolloutStats()
        episodes = [Episode(record=r, prompt_ids=self.prompt_ids(r), group=g)
                    for g, r in enumerate(records) for _ in range(num_generations)]
        used = [0] * len(episodes)  # completion tokens so far
        calls = [0] * len(episodes)
        turns = [0] * len(episodes)
        active = list(range(len(episodes)))
        loop = asyncio.get_running_loop()
        while active:
            prompts = [episodes[i].prompt_ids + episodes[i].completion_ids for i in active]
            budgets = [min(self.max_tokens_per_turn, self.max_completion_length - used[i])
                       for i in active]
            t0 = time.perf_counter()
            samples = await sampler.generate(
                prompts, max_tokens=budgets, temperature=self.temperature, top_p=self.top_p,
                stop=self.stop, seed=None if seed is None else seed + stats.turns * 1_000_003)
            stats.sampler_seconds += time.perf_counter() - t0
            stats.turns += 1
            if len(samples) != len(active):
                raise RuntimeError(f"sampler returned {len(samples)} samples for "
                                   f"{len(active)} prompts")
            pending: list[tuple[int, ParsedTurn]] = []
            for i, sample in zip(active, samples):
                parsed = self._assistant_turn(episodes[i], sample)
                used[i] += len(sample.token_ids)
                turns[i] += 1
                stats.sampled_tokens += len(sample.token_ids)
                if self._wants_tool(episodes[i], parsed, sample, used[i], calls[i],
                                    turns[i]):
                    pending.append((i, parsed))
            t0 = time.perf_counter()
            results = await self._call_tools(loop, [parsed for _, parsed in pending])
            stats.tool_seconds += time.perf_counter() - t0
            stats.tool_calls += len(pending)
            active = []
            for (i, parsed), (text, ok, timed_out) in zip(pending, results):
                calls[i] += 1
                text, cut = self.cap_result(text)
                if self._tool_turn(episodes[i], text, ok, used[i], name=_tool_name(parsed),
                                   timed_out=timed_out, truncated=cut):
                    active.append(i)
                used[i] += len(episodes[i].turns[-1].token_ids)
        stats.seconds = time.perf_counter() - started
        self.last_stats = stats
        return episodes

    def rollout_sync(self, records: Sequence[QARecord], num_generations: int, sampler,
                     *, seed: int | None = None) -> list[Episode]:
        """``rollout`` from synchronous code (the trainer's ``rollout_func``)."""
        return run_sync(self.rollout(records, num_generations, sampler, seed=seed))

    # -- one step of one episode ----------------------------------------------------------------
    def _assistant_turn(self, episode: Episode, sample) -> ParsedTurn:
        episode.turns.append(Turn(role="assistant", text=sample.text,
                                  token_ids=list(sample.token_ids),
                                  logprobs=None if sample.logprobs is None
                                  else list(sample.logprobs)))
        parsed = self.parser.parse(sample.text)
        if parsed.answer is not None:
            episode.answer = parsed.answer
        return parsed

    def _wants_tool(self, episode: Episode, parsed: ParsedTurn, sample, used: int, calls: int,
                    turns: int) -> bool:
        """Whether the episode goes on with a tool call; sets ``truncated`` when it ends by a
        length limit."""
        if parsed.answer is not None:
            return False
        attempted = parsed.tool_call is not None or parsed.tool_error is not None
        out_of_tokens = used >= self.max_completion_length
        if sample.finish_reason == "length" and (not attempted or out_of_tokens):
            episode.truncated = True  # cut off mid-turn: no answer, no complete call
            return False
        if not attempted:
            return False  # the model neither called a tool nor answered: the episode ends
        if out_of_tokens:
            episode.truncated = True
            return False
        # A call needs a turn left to read its result, and room in the call budget.
        return calls < self.max_tool_calls and turns < self.max_turns

    def _call_tool(self, parsed: ParsedTurn) -> tuple[str, bool]:
        from mtgrpo.trainer.tools import execute_tool_call

        try:
            return execute_tool_call(self.tools, parsed)
        except BaseException as exc:  # noqa: BLE001 - on a helper thread: keep the turn going
            # (execute_tool_call lets only the run's own stop through; here it is a thread's)
            return error_text(f"{_tool_name(parsed)} stopped: {type(exc).__name__}"), False

    def _is_async_call(self, parsed: ParsedTurn) -> bool:
        from mtgrpo.task.api import is_async_tool

        call = parsed.tool_call
        tool = self.tools.get(call.name) if call is not None and parsed.tool_error is None \
            else None
        return tool is not None and is_async_tool(tool)

    async def _call_tools(self, loop, calls: Sequence[ParsedTurn]) -> list[_Result]:
        """Every call of a turn: ``async`` tools awaited together on the loop (each cancelled
        after ``tool_timeout_s``), the others in threads (:meth:`_call_sync_tools`); results
        in call order."""
        if not calls or not any(self._is_async_call(c) for c in calls):
            return await self._call_sync_tools(loop, calls)
        from mtgrpo.trainer.tools.base import execute_tool_call_async

        awaited = [i for i, c in enumerate(calls) if self._is_async_call(c)]
        threaded = [i for i in range(len(calls)) if i not in set(awaited)]
        # Scheduled first, so they run while the loop waits for the threaded calls.
        async def bounded(parsed: ParsedTurn) -> _Result:
            try:
                text, ok = await asyncio.wait_for(execute_tool_call_async(self.tools, parsed),
                                                  self.tool_timeout_s)
                return text, ok, False
            except asyncio.TimeoutError:
                return (error_text(f"{_tool_name(parsed)} timed out after "
                                   f"{self.tool_timeout_s:g}s (tool_timeout_s)"), False, True)

        pending = asyncio.gather(*(bounded(calls[i]) for i in awaited))
        threaded_results = await self._call_sync_tools(loop, [calls[i] for i in threaded])
        results: list[_Result] = [("", False, False)] * len(calls)
        for i, r in zip(awaited, await pending):
            results[i] = r
        for i, r in zip(threaded, threaded_results):
            results[i] = r
        return results

    async def _call_sync_tools(self, loop, calls: Sequence[ParsedTurn]) -> list[_Result]:
        """Every call of a turn, up to ``tool_workers`` at a time, on helper threads, each
        bounded by ``tool_timeout_s``.

        Thread hand-offs are what cost here: while a CPU vLLM server's processes keep both cores
        busy, every thread wake-up waits for a time slice (64 trivial calls as 64 pool jobs took
        0.12 s of a 0.78 s two-turn rollout in benchmarks/rollouts.py). So helpers live as long
        as the environment, the calls of a turn are taken from one shared queue, and a helper is
        woken only by the loop (the turn's first) or by another helper that found calls still
        waiting: cheap calls are done by one thread, slow ones fan out to ``tool_workers``.

        The loop thread runs no call itself, so it can keep time: a call still running after
        ``tool_timeout_s`` gets an error result at once, and its thread (stuck in the tool; a
        Python thread cannot be killed) is abandoned, a daemon that never blocks the exit.
        """
        if not calls:
            return []
        n = len(calls)
        results: list[_Result | None] = [None] * n
        started: list[float | None] = [None] * n
        runner: list[threading.Thread | None] = [None] * n
        lock = threading.Lock()
        state = {"next": 0, "left": n, "helpers": 0}
        done = loop.create_future()
        helpers = self._tool_helpers()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        def wake_helper() -> None:  # with the lock held
            if state["next"] < n and state["helpers"] < self.tool_workers:
                state["helpers"] += 1
                helpers.submit(work)

        def work() -> None:
            me = threading.current_thread()
            while True:
                with lock:
                    i = state["next"]
                    if i == n:
                        state["helpers"] -= 1
                        return
                    state["next"] += 1
                    started[i], runner[i] = time.monotonic(), me
                    wake_helper()  # calls are still waiting: one more thread may help
                result = self._call_tool(calls[i])
                with lock:
                    if results[i] is not None:  # timed out meanwhile: this thread was let go
                        return
                    results[i] = (*result, False)
                    state["left"] -= 1
                    last = state["left"] == 0
                if last:
                    loop.call_soon_threadsafe(finished)

        with lock:
            wake_helper()
        timeout = self.tool_timeout_s
        while True:
            with lock:
                now = time.monotonic()
                for i in range(state["next"]):
                    if results[i] is None and now - started[i] >= timeout:
                        results[i] = (error_text(f"{_tool_name(calls[i])} timed out after "
                                                 f"{timeout:g}s (tool_timeout_s)"), False, True)
                        state["left"] -= 1
                        state["helpers"] -= 1
                        helpers.abandon(runner[i])
                        wake_helper()
                if state["left"] == 0:
                    break
                running = [started[i] for i in range(state["next"]) if results[i] is None]
                wait = (min(running) + timeout - now) if running else timeout
            try:
                await asyncio.wait_for(asyncio.shield(done), max(wait, 0.001))
            except asyncio.TimeoutError:
                pass
        return results  # type: ignore[return-value]

    def _tool_helpers(self) -> "_Helpers":
        if self._helpers is None:
            self._helpers = _Helpers(self.tool_workers)
        return self._helpers

    def close(self) -> None:
        """Stop the tool helper threads (abandoned ones, stuck in a tool, are daemons)."""
        if self._helpers is not None:
            self._helpers.close()
            self._helpers = None

    def cap_result(self, result: str) -> tuple[str, bool]:
        """A tool result cut to ``tool_result_max_chars`` (before it is tokenized), and whether
        it was cut. The marker goes inside the result: the parser's framing (its closing tag)
        is added after."""
        limit = self.tool_result_max_chars
        if len(result) <= limit:
            return result, False
        return (result[:limit] + f"\n[... {len(result) - limit} more characters cut: "
                "tool_result_max_chars]"), True

    def _tool_turn(self, episode: Episode, result: str, ok: bool, used: int, *,
                   name: str = "", timed_out: bool = False, truncated: bool = False) -> bool:
        """Append the environment's tokens; False when they exhaust the completion budget."""
        sampled = episode.turns[-1].token_ids
        text, ids = self.environment_ids(result, sampled)
        room = self.max_completion_length - used

        def turn(text: str, ids: list[int]) -> Turn:
            return Turn(role="tool", text=text, token_ids=ids, tool_ok=ok, tool_name=name,
                        tool_timed_out=timed_out, tool_truncated=truncated)

        if len(ids) >= room:  # no room left for the next assistant turn: keep what fits, stop
            # Cut the result, not its framing, so the result's closing tag stays.
            frame = len(self.environment_ids("", sampled)[1])
            keep = room - frame - 16
            if keep > 0:
                head = self.tokenizer.decode(self.encode(result)[:keep], skip_special_tokens=False)
                text, ids = self.environment_ids(head + " [... cut]", sampled)
            if len(ids) > room:  # not even the framing fits
                ids = ids[:room]
                text = self.tokenizer.decode(ids, skip_special_tokens=False)
            episode.turns.append(turn(text, ids))
            episode.truncated = True
            return False
        episode.turns.append(turn(text, ids))
        return True


def _tool_name(parsed: ParsedTurn) -> str:
    """The called tool's name for messages and metrics ("" when the call did not parse)."""
    return parsed.tool_call.name if parsed.tool_call is not None else ""


class _Helpers:
    """Daemon threads running tool calls, kept across rollouts. A thread stuck in a call past
    its time-out is abandoned (:meth:`abandon`): it leaves when its call returns, if ever, and
    a new thread takes its place when work comes."""

    def __init__(self, size: int):
        self.size = size
        self._cond = threading.Condition()
        self._tasks: deque[Callable[[], None]] = deque()
        self._threads: set[threading.Thread] = set()
        self._idle = 0
        self._closed = False

    def submit(self, fn: Callable[[], None]) -> None:
        with self._cond:
            self._tasks.append(fn)
            if self._idle >= len(self._tasks):  # a waiting thread will take it
                self._cond.notify()
            else:
                thread = threading.Thread(target=self._run, daemon=True,
                                          name="mtgrpo-tool")
                self._threads.add(thread)
                thread.start()

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while not self._tasks and not self._closed and me in self._threads:
                    self._idle += 1
                    self._cond.wait()
                    self._idle -= 1
                if self._closed or me not in self._threads:
                    self._threads.discard(me)
                    return
                fn = self._tasks.popleft()
            fn()

    def abandon(self, thread: threading.Thread | None) -> None:
        with self._cond:
            self._threads.discard(thread)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            threads = list(self._threads)
            self._cond.notify_all()
        for thread in threads:
            thread.join(timeout=10)
