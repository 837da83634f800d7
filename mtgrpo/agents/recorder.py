"""One agent episode's calls, stitched token for token into trainable sequences.

Every call the agent makes through the endpoint is recorded as the backend produced it: the
prompt's token ids, the sampled ids, their log-probs, the text and why it ended. Nothing is
re-tokenized. Calls are stitched into sequences: a call whose prompt starts with the current
sequence's prompt + completion continues it (the tokens in between, tool results or new user
messages, become a context turn, masked out of the loss); any other prompt starts a new
sequence, and the break is counted. The trainer trains one row per episode: the last sequence
(it holds the final answer); earlier sequences' sampled tokens are counted as dropped.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

from mtgrpo.trainer.types import Episode, QARecord, Turn


@dataclass
class AgentEpisode(Episode):
    """An :class:`Episode` played by an agent: its last sequence, plus what the run reports.

    ``earlier``: the sequences before the last break (not trained); ``breaks``: prompts that did
    not extend the sequence before them; ``calls``: every call made (all sequences);
    ``agent_reward``: the reward the agent returned (None: the rubric scores the answer);
    ``error``: why the agent failed (raised, timed out, exited non-zero), None when it did not.
    """

    episode_id: str = ""
    earlier: list[Episode] = field(default_factory=list)
    breaks: int = 0
    calls: int = 0
    agent_reward: float | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def dropped_tokens(self) -> int:
        """Sampled tokens of the earlier sequences: recorded, not trained."""
        return sum(len(t.token_ids) for ep in self.earlier for t in ep.turns
                   if t.role == "assistant")


def tool_ok(results: Sequence[str]) -> bool | None:
    """A context turn's ``tool_ok``: None without tool messages, else whether none of them is
    an error (the project's convention: an ``Error: ...`` result is a failed call)."""
    if not results:
        return None
    return not any(r.lstrip().lower().startswith("error") for r in results)


class EpisodeRecorder:
    """The calls of one episode, stitched as they arrive (thread-safe: calls may overlap).

    ``decode(ids) -> str`` gives a context turn its text (for rewards and logs only; the ids
    are what is trained).
    """

    def __init__(self, episode_id: str, record: QARecord, group: int,
                 decode: Callable[[list[int]], str]):
        self.episode_id = episode_id
        self.record = record
        self.group = group
        self.decode = decode
        self.sequences: list[Episode] = []
        self.breaks = 0
        self.calls = 0
        self.truncated = False
        self._lock = threading.Lock()

    def history(self) -> list[int] | None:
        """The current sequence's prompt + completion ids (None before the first call)."""
        with self._lock:
            if not self.sequences:
                return None
            seq = self.sequences[-1]
            return list(seq.prompt_ids) + seq.completion_ids

    def completion_used(self, prompt_ids: Sequence[int]) -> int:
        """Completion tokens a call with ``prompt_ids`` has used in its sequence already."""
        with self._lock:
            if self.sequences:
                seq = self.sequences[-1]
                prefix = list(seq.prompt_ids) + seq.completion_ids
                if list(prompt_ids[:len(prefix)]) == prefix:
                    return len(prompt_ids) - len(seq.prompt_ids)
            return 0

    def add(self, prompt_ids: Sequence[int], token_ids: Sequence[int],
            logprobs: Sequence[float] | None, text: str, finish_reason: str, *,
            tool_results: Sequence[str] = (), tool_name: str = "") -> bool:
        """Record one call; True when it continued the current sequence, False when it started
        one (the first call, or a break). ``tool_results``: the contents of the tool messages
        the agent added since the last call (they make up the context turn); ``tool_name``: the
        tool the previous reply called, if any (for the per-tool metrics)."""
        prompt = [int(i) for i in prompt_ids]
        with self._lock:
            self.calls += 1
            continued = False
            if self.sequences:
                seq = self.sequences[-1]
                prefix = list(seq.prompt_ids) + seq.completion_ids
                if len(prompt) >= len(prefix) and prompt[:len(prefix)] == prefix:
                    context = prompt[len(prefix):]
                    if context:
                        # tool_ok None: no tool result in it (a new user message), no call.
                        seq.turns.append(Turn(role="tool", text=self.decode(context),
                                              token_ids=context, tool_ok=tool_ok(tool_results),
                                              tool_name=tool_name if tool_results else ""))
                    continued = True
                else:
                    self.breaks += 1
            if not continued:
                self.sequences.append(Episode(record=self.record, prompt_ids=prompt,
                                              group=self.group))
            self.sequences[-1].turns.append(Turn(
                role="assistant", text=text, token_ids=[int(i) for i in token_ids],
                logprobs=None if logprobs is None else [float(x) for x in logprobs]))
            if finish_reason == "length":
                self.truncated = True
            return continued

    def episode(self, *, answer: str | None = None, agent_reward: float | None = None,
                error: str | None = None, seconds: float = 0.0,
                empty_prompt: Sequence[int] = ()) -> AgentEpisode:
        """The episode as the trainer takes it: the last sequence. An agent that made no call
        gets ``empty_prompt`` (the record's question, rendered) and no turns: a row with nothing
        to train, scored like any other."""
        with self._lock:
            last = self.sequences[-1] if self.sequences else Episode(
                record=self.record, prompt_ids=list(empty_prompt), group=self.group)
            return AgentEpisode(
                record=self.record, prompt_ids=list(last.prompt_ids), turns=list(last.turns),
                answer=answer, truncated=self.truncated, group=self.group,
                episode_id=self.episode_id, earlier=list(self.sequences[:-1]),
                breaks=self.breaks, calls=self.calls, agent_reward=agent_reward, error=error,
                seconds=seconds)
