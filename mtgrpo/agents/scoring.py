"""Scores an agent episode with the task's rubric, one turn reward per call.

Turn-level reward functions are called once per call, on a view of the episode holding just
that call and the context that followed it (its tool result): ``tool_execution`` then says
whether that call's tool ran, ``answer_in_result`` whether its result holds the answer. A call
with no tool result after it (the answer, or a reply the agent answered with a new user
message) has no turn reward. Outcome-level reward functions see
the whole trained sequence with the episode's answer; a reward the agent returned replaces
their sum (the components are still logged). ``RewardBreakdown.turn`` is the mean over the
rewarded calls (the mean-turn reward ``grpo_mr`` trains on), and ``CallRewards.calls`` the
per-call values the per-call MT-GRPO advantages use (``mtgrpo.trainer.advantages``).
"""

from __future__ import annotations

from dataclasses import dataclass

from mtgrpo.trainer.types import Episode, RewardBreakdown


@dataclass(frozen=True)
class CallRewards(RewardBreakdown):
    """A breakdown with the turn reward of each call, in order (None: a call with no context
    after it, which gets no turn credit)."""

    calls: tuple[float | None, ...] = ()


def call_views(episode: Episode) -> list[Episode | None]:
    """Per assistant turn: an episode of that turn and the context turn after it (None when
    no tool result followed it)."""
    views: list[Episode | None] = []
    turns = episode.turns
    for i, turn in enumerate(turns):
        if turn.role != "assistant":
            continue
        after = turns[i + 1] if i + 1 < len(turns) and turns[i + 1].role == "tool" else None
        if after is not None and after.tool_ok is None:
            after = None  # no tool result after it (a new user message): no tool call to score
        views.append(None if after is None else Episode(
            record=episode.record, prompt_ids=episode.prompt_ids, turns=[turn, after],
            group=episode.group))
    return views


class AgentScorer:
    """``episode -> CallRewards`` for agent episodes, with a task's rubric and parser."""

    def __init__(self, rubric, parser):
        self.rubric = rubric
        self.parser = parser

    def __call__(self, episode: Episode) -> CallRewards:
        turn_fns = [r for r in self.rubric.rewards if r.level == "turn"]
        outcome_fns = [r for r in self.rubric.rewards if r.level == "outcome"]
        components: dict[str, float] = {}
        calls: list[float | None] = []
        per_fn: dict[str, list[float]] = {r.name: [] for r in turn_fns}
        for view in call_views(episode):
            if view is None:
                calls.append(None)
                continue
            total = 0.0
            for r in turn_fns:
                value = r(view, self.parser)
                per_fn[r.name].append(value)
                total += r.weight * value
            calls.append(total)
        for name, values in per_fn.items():
            components[name] = sum(values) / len(values) if values else 0.0
        outcome = 0.0
        for r in outcome_fns:
            value = r(episode, self.parser)
            components[r.name] = value
            outcome += r.weight * value
        reward = getattr(episode, "agent_reward", None)
        if reward is not None:
            components["agent_reward"] = float(reward)
            outcome = float(reward)
        rewarded = [c for c in calls if c is not None]
        turn = sum(rewarded) / len(rewarded) if rewarded else 0.0
        return CallRewards(turn=turn, outcome=outcome, components=components, calls=tuple(calls))
