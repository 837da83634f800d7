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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from mtgrpo.rollout.client import run_sync
from mtgrpo.trainer.types import Episode, ParsedTurn, QARecord, Turn

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
    (left-truncated). ``tool_role`` is the chat role of tool-result messages: ``user`` as in the
    MT-GRPO reference, or ``tool`` for templates that render it.
    """

    def __init__(self, tokenizer, parser, tools: Mapping[str, Any], *, max_turns: int,
                 max_tool_calls: int, max_tokens_per_turn: int, max_completion_length: int,
                 max_prompt_length: int, temperature: float, top_p: float,
                 tool_workers: int = 16, tool_role: str = "user"):
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
        self.frame = EnvironmentFrame.from_tokenizer(tokenizer, tool_role=tool_role)
        self.system_prompt = parser.system_prompt(list(self.tools.values()))
        self.stop = list(parser.stop)
        eos = tokenizer.eos_token_id
        self._eos = {eos: tokenizer.convert_ids_to_tokens(eos)} if eos is not None else {}
        self._prompt_cache: dict[tuple[str, str], list[int]] = {}
        self._pool: ThreadPoolExecutor | None = None  # tool helper threads, started on first use
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
                      top_p=cfg.top_p)
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
        """The record's prompt, tokenized once; left-truncated to ``max_prompt_length``."""
        key = (record.id, record.question)
        if key not in self._prompt_cache:
            ids = self.encode(self.prompt_text(record.question))
            if len(ids) > self.max_prompt_length:
                log.warning("prompt of record %s has %d tokens; keeping the last %d "
                            "(max_prompt_length)", record.id, len(ids), self.max_prompt_length)
                ids = ids[-self.max_prompt_length:]
            self._prompt_cache[key] = ids
        return list(self._prompt_cache[key])

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
            for (i, _), (text, ok) in zip(pending, results):
                calls[i] += 1
                if self._tool_turn(episodes[i], text, ok, used[i]):
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

        return execute_tool_call(self.tools, parsed)

    def _is_async_call(self, parsed: ParsedTurn) -> bool:
        from mtgrpo.task.api import is_async_tool

        call = parsed.tool_call
        tool = self.tools.get(call.name) if call is not None and parsed.tool_error is None \
            else None
        return tool is not None and is_async_tool(tool)

    async def _call_tools(self, loop, calls: Sequence[ParsedTurn]) -> list[tuple[str, bool]]:
        """Every call of a turn: ``async`` tools awaited together on the loop, the others in
        threads (:meth:`_call_sync_tools`); results in call order."""
        if not calls or not any(self._is_async_call(c) for c in calls):
            return await self._call_sync_tools(loop, calls)
        from mtgrpo.trainer.tools.base import execute_tool_call_async

        awaited = [i for i, c in enumerate(calls) if self._is_async_call(c)]
        threaded = [i for i in range(len(calls)) if i not in set(awaited)]
        # Scheduled first, so they run while the loop waits for the threaded calls.
        pending = asyncio.gather(*(execute_tool_call_async(self.tools, calls[i])
                                   for i in awaited))
        threaded_results = await self._call_sync_tools(loop, [calls[i] for i in threaded])
        results: list[tuple[str, bool]] = [("", False)] * len(calls)
        for i, r in zip(awaited, await pending):
            results[i] = r
        for i, r in zip(threaded, threaded_results):
            results[i] = r
        return results

    async def _call_sync_tools(self, loop,
                               calls: Sequence[ParsedTurn]) -> list[tuple[str, bool]]:
        """Every call of a turn, up to ``tool_workers`` at a time, taken from one shared queue by
        the event-loop thread itself and up to ``tool_workers - 1`` helper threads.

        Thread hand-offs are what cost here: while a CPU vLLM server's processes keep both cores
        busy, every thread start or wake-up waits for a time slice (64 trivial calls as 64 pool
        jobs took 0.12 s of a 0.78 s two-turn rollout in benchmarks/rollouts.py; 16 jobs on a
        fresh pool, all awaited, still 5-80 ms). So the loop thread works through the queue
        itself, helpers live as long as the environment, and a helper is woken only by the
        loop thread's first call or by another helper that found calls still waiting: cheap
        calls are all done before anyone wakes, slow ones fan out to ``tool_workers`` threads.
        The turn ends when the last call is done. Nothing else runs on the loop meanwhile: the
        rollout needs the turn's results for its next request.
        """
        if not calls:
            return []
        results: list[tuple[str, bool] | None] = [None] * len(calls)
        lock = threading.Lock()
        state = {"next": 0, "left": len(calls), "helpers": 0}
        done = loop.create_future()
        pool = self._tool_pool()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        def wake_helper() -> None:  # with the lock held
            if state["next"] < len(calls) and state["helpers"] < self.tool_workers - 1:
                state["helpers"] += 1
                pool.submit(work, False)

        def work(in_loop: bool) -> None:
            while True:
                with lock:
                    i = state["next"]
                    if i == len(calls):
                        return
                    state["next"] += 1
                    if not in_loop:
                        wake_helper()  # calls are still waiting: one more thread may help
                try:
                    results[i] = self._call_tool(calls[i])
                finally:  # counted even if it raised: an uncounted call would hang the turn
                    with lock:
                        state["left"] -= 1
                        last = state["left"] == 0
                    if last and not in_loop:
                        loop.call_soon_threadsafe(finished)

        if len(calls) > 1:
            with lock:
                wake_helper()
        work(True)
        with lock:
            if state["left"] == 0:
                finished()
        await done
        return results  # type: ignore[return-value]

    def _tool_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max(1, self.tool_workers - 1),
                                            thread_name_prefix="mtgrpo-tool")
        return self._pool

    def close(self) -> None:
        """Stop the tool helper threads (they also stop when the environment is collected)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _tool_turn(self, episode: Episode, result: str, ok: bool, used: int) -> bool:
        """Append the environment's tokens; False when they exhaust the completion budget."""
        text, ids = self.environment_ids(result, episode.turns[-1].token_ids)
        room = self.max_completion_length - used
        if len(ids) >= room:  # no room left for the next assistant turn: keep what fits, stop
            ids = ids[:room]
            text = self.tokenizer.decode(ids, skip_special_tokens=False)
            episode.turns.append(Turn(role="tool", text=text, token_ids=ids, tool_ok=ok))
            episode.truncated = True
            return False
        episode.turns.append(Turn(role="tool", text=text, token_ids=ids, tool_ok=ok))
        return True
