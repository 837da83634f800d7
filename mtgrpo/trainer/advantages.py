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
