"""Group-normalised advantages for mt_grpo, grpo_or and grpo_mr (docs/trainer.md).

Within each group (the completions of one prompt), each reward R in {R_turn, R_outcome,
R_combined = R_turn + R_outcome} becomes ``A = (R - mean) / (std + eps)`` with the unbiased
(n - 1) standard deviation, as the reference computes it with ``torch.std``. Then, per episode,
``(first, later)``: the advantage of the tokens before the first tool result and of the rest.

    mt_grpo  first = A_outcome + lambda * A_turn, later = A_outcome;
             an episode without a tool result: A_combined on every token
    grpo_or  A_outcome on every token
    grpo_mr  A_combined on every token

Plain numpy: no torch here. Differences from the reference: a group of one gets advantage 0
(torch.std of one value is NaN there), and a group whose rewards are all equal gets exactly 0
(the reference's (R - mean) can be a rounding error such as 1e-16 / 1e-4 = 1e-12).
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

ALGORITHMS = ("mt_grpo", "grpo_or", "grpo_mr")


def group_normalize(rewards: Sequence[float], groups: Sequence[Hashable], *,
                    eps: float = 1e-4) -> np.ndarray:
    """``(R - mean) / (std + eps)`` within each group; unbiased std; 0 for a constant group."""
    values = np.asarray(rewards, dtype=np.float64)
    if values.ndim != 1 or len(values) != len(groups):
        raise ValueError(f"got {values.size} rewards for {len(groups)} group labels")
    if not np.all(np.isfinite(values)):
        raise ValueError("rewards must be finite")
    out = np.zeros_like(values)
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    for idx in members.values():
        r = values[idx]
        if len(r) < 2 or np.all(r == r[0]):
            continue  # no spread, no signal: advantage 0 (finite, unlike std of one value)
        out[idx] = (r - r.mean()) / (r.std(ddof=1) + eps)
    return out


def compute_advantages(turn_rewards: Sequence[float], outcome_rewards: Sequence[float],
                       groups: Sequence[Hashable], has_tool_result: Sequence[bool], *,
                       algorithm: str, turn_coef: float = 1.0,
                       eps: float = 1e-4) -> list[tuple[float, float]]:
    """Per episode ``(advantage of first-turn tokens, advantage of later assistant tokens)``."""
    n = len(turn_rewards)
    if not (len(outcome_rewards) == len(groups) == len(has_tool_result) == n):
        raise ValueError(f"lengths differ: {n} turn rewards, {len(outcome_rewards)} outcome "
                         f"rewards, {len(groups)} groups, {len(has_tool_result)} tool flags")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r} (allowed: {', '.join(ALGORITHMS)})")
    turn = np.asarray(turn_rewards, dtype=np.float64)
    outcome = np.asarray(outcome_rewards, dtype=np.float64)
    a_turn = group_normalize(turn, groups, eps=eps)
    a_outcome = group_normalize(outcome, groups, eps=eps)
    a_combined = group_normalize(turn + outcome, groups, eps=eps)
    result: list[tuple[float, float]] = []
    for i in range(n):
        if algorithm == "grpo_or":
            pair = (a_outcome[i], a_outcome[i])
        elif algorithm == "grpo_mr" or not has_tool_result[i]:
            pair = (a_combined[i], a_combined[i])
        else:
            pair = (a_outcome[i] + turn_coef * a_turn[i], a_outcome[i])
        result.append((float(pair[0]), float(pair[1])))
    return result


def token_advantages(first: float, later: float, completion_len: int,
                     first_tool_result_index: int | None) -> list[float]:
    """One advantage per completion token: ``first`` before the first tool result, then ``later``.

    Tool-result tokens get ``later`` too; the loss mask (``Episode.env_mask``) zeroes them.
    """
    if completion_len < 0:
        raise ValueError(f"completion_len must be >= 0, got {completion_len}")
    split = completion_len if first_tool_result_index is None else max(
        0, min(first_tool_result_index, completion_len))
    return [float(first)] * split + [float(later)] * (completion_len - split)


def call_advantages(outcome_rewards: Sequence[float],
                    call_turn_rewards: Sequence[Sequence[float | None]],
                    groups: Sequence[Hashable], *, algorithm: str, turn_coef: float = 1.0,
                    eps: float = 1e-4) -> list[list[float]]:
    """Per episode, one advantage per call (agent episodes: each call a turn; docs/agents.md).

    ``call_turn_rewards[i][k]``: the turn reward of call ``k`` of episode ``i``, None for a
    call with no context after it (the answer), which earns no turn credit.

        mt_grpo  call k: A_outcome + lambda * A_turn(k), where A_turn normalises the turn
                 rewards of all rewarded calls of the group together (pooled, not per
                 position: the agent chooses how many calls it makes); unrewarded calls get
                 A_outcome
        grpo_or  A_outcome on every call
        grpo_mr  the mean-turn baseline: A of (outcome + the mean turn reward of the
                 episode's rewarded calls) on every call

    The pooled turn advantages of a group sum to zero, so making more calls earns no turn
    credit by itself (tests/test_agents_credit.py checks the expected gradient exactly).
    """
    n = len(outcome_rewards)
    if not (len(call_turn_rewards) == len(groups) == n):
        raise ValueError(f"lengths differ: {n} outcome rewards, {len(call_turn_rewards)} call "
                         f"reward lists, {len(groups)} groups")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r} (allowed: {', '.join(ALGORITHMS)})")
    outcome = np.asarray(outcome_rewards, dtype=np.float64)
    a_outcome = group_normalize(outcome, groups, eps=eps)
    if algorithm == "grpo_or":
        return [[float(a_outcome[i])] * len(calls) for i, calls in enumerate(call_turn_rewards)]
    if algorithm == "grpo_mr":
        means = [float(np.mean(r)) if (r := [c for c in calls if c is not None]) else 0.0
                 for calls in call_turn_rewards]
        a_mean = group_normalize(outcome + np.asarray(means), groups, eps=eps)
        return [[float(a_mean[i])] * len(calls) for i, calls in enumerate(call_turn_rewards)]
    flat = [(i, k) for i, calls in enumerate(call_turn_rewards)
            for k, c in enumerate(calls) if c is not None]
    a_turn = group_normalize([call_turn_rewards[i][k] for i, k in flat],
                             [groups[i] for i, _ in flat], eps=eps) if flat else np.zeros(0)
    out = [[float(a_outcome[i])] * len(calls) for i, calls in enumerate(call_turn_rewards)]
    for (i, k), a in zip(flat, a_turn):
        out[i][k] += turn_coef * float(a)
    return out


def call_token_advantages(call_advantages_row: Sequence[float],
                          spans: Sequence[tuple[int, int]], completion_len: int) -> list[float]:
    """One advantage per completion token: call ``k``'s value on its span ``[start, end)``,
    0 elsewhere (context tokens, which the loss mask zeroes anyway)."""
    if len(call_advantages_row) != len(spans):
        raise ValueError(f"{len(call_advantages_row)} advantages for {len(spans)} call spans")
    values = [0.0] * completion_len
    for a, (start, end) in zip(call_advantages_row, spans):
        for t in range(max(0, start), min(end, completion_len)):
            values[t] = float(a)
    return values
