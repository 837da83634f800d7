"""Plain data types shared by the environment, the parsers, the rewards and the trainer.

Standard library only. An ``Episode`` is one multi-turn rollout: the prompt's token ids and the
turns that followed, each keeping the exact token ids the sampler produced (assistant turns) or
the environment appended (tool turns). Nothing downstream re-tokenizes text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping


@dataclass(frozen=True)
class QARecord:
    """One question with every accepted answer alias (a task's ``Record``).

    ``info`` holds whatever else a task's record loader keeps for its tools and rewards (an
    expected number, a database name); it takes no part in equality or hashing.
    """

    id: str
    question: str
    aliases: tuple[str, ...]
    info: Mapping[str, Any] = field(default_factory=dict, compare=False)
    where: str = field(default="", compare=False)  # "file:line" it was read from, for errors


@dataclass(frozen=True)
class ToolCall:
    """A parsed tool call: the tool's name and its keyword arguments."""

    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class ParsedTurn:
    """What a parser read out of one assistant turn's text.

    ``tool_call`` is set for a well-formed call; ``tool_error`` (set instead) says why a call the
    model attempted could not be parsed, and becomes the tool result ("Error: ...").
    """

    reasoning: str | None = None
    tool_call: ToolCall | None = None
    tool_error: str | None = None
    answer: str | None = None


@dataclass
class Turn:
    """One turn of an episode. ``logprobs`` are the sampler's, one per token (assistant only)."""

    role: Literal["assistant", "tool"]
    text: str
    token_ids: list[int]
    logprobs: list[float] | None = None
    tool_ok: bool | None = None  # tool turns: did the call execute without error
    # tool turns: the tool's name ("" when the call could not be parsed), whether the call ran
    # past tool_timeout_s, and whether its result was cut to tool_result_max_chars
    tool_name: str = ""
    tool_timed_out: bool = False
    tool_truncated: bool = False


@dataclass
class Episode:
    """One rollout: prompt ids, then alternating assistant and tool turns."""

    record: QARecord
    prompt_ids: list[int]
    turns: list[Turn] = field(default_factory=list)
    answer: str | None = None  # the parsed final answer, if any
    truncated: bool = False  # stopped by a length limit rather than by answering
    group: int = 0  # index of the prompt's group within the batch
    policy_version: int | None = None  # optimizer step of the weights it was sampled with

    @property
    def assistant_texts(self) -> list[str]:
        return [t.text for t in self.turns if t.role == "assistant"]

    @property
    def tool_results(self) -> list[str]:
        return [t.text for t in self.turns if t.role == "tool"]

    @property
    def tool_calls(self) -> int:
        return sum(1 for t in self.turns if t.role == "tool")

    @property
    def tool_successes(self) -> int:
        return sum(1 for t in self.turns if t.role == "tool" and t.tool_ok)

    def tool_counts(self) -> dict[str, float]:
        """Per-tool counts of this episode's calls for metrics: ``tool_failures/<name>``,
        ``tool_timeouts/<name>`` (each call that failed or ran out of time) and the totals
        ``tool_failures``, ``tool_timeouts``, ``tool_truncations`` (always present)."""
        out = {"tool_failures": 0.0, "tool_timeouts": 0.0, "tool_truncations": 0.0}
        for t in self.turns:
            if t.role != "tool":
                continue
            name = t.tool_name or "invalid_call"
            # tool_ok None: an agent run's context turn without a tool result, not a failed call
            for key, hit in (("tool_failures", t.tool_ok is False),
                             ("tool_timeouts", t.tool_timed_out),
                             ("tool_truncations", t.tool_truncated)):
                if hit:
                    out[key] += 1
                    if key != "tool_truncations":
                        out[f"{key}/{name}"] = out.get(f"{key}/{name}", 0.0) + 1
        return out

    @property
    def completion_ids(self) -> list[int]:
        return [i for t in self.turns for i in t.token_ids]

    @property
    def env_mask(self) -> list[int]:
        """1 for sampled (trainable) tokens, 0 for environment tokens: the loss mask only."""
        return [1 if t.role == "assistant" else 0 for t in self.turns for _ in t.token_ids]

    @property
    def first_tool_result_index(self) -> int | None:
        """Completion-token index where the first tool result starts (None: no tool result)."""
        offset = 0
        for t in self.turns:
            if t.role == "tool":
                return offset
            offset += len(t.token_ids)
        return None


@dataclass(frozen=True)
class RewardBreakdown:
    """An episode's rewards: the turn-level and outcome-level sums and every component."""

    turn: float
    outcome: float
    components: dict[str, float]

    @property
    def total(self) -> float:
        return self.turn + self.outcome
