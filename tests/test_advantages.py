"""Advantages against numbers computed by hand (docs/trainer.md).

One batch of 7 episodes from 3 prompts, interleaved so that grouping must follow the group
labels, not positions:

    group "q1" (4 episodes, mixed tool / no tool)
        R_turn     = 0.7  0.2  0.0  0.7   mean 0.4  std = sqrt(0.38 / 3)  = 0.3559026084
        R_outcome  = 2.4  0.4  0.0  0.4   mean 0.8  std = sqrt(3.52 / 3)  = 1.0832051206
        R_combined = 3.1  0.6  0.0  1.1   mean 1.2  std = sqrt(5.42 / 3)  = 1.3441230102
        has tool   = yes  yes  no   yes
        A = (R - mean) / (std + 1e-4):
        A_turn     =  0.8426904548  -0.5617936366  -1.1235872731   0.8426904548
        A_outcome  =  1.4769615407  -0.3692403852  -0.7384807704  -0.3692403852
        A_combined =  1.4134559411  -0.4463545077  -0.8927090154  -0.0743924180
    group "q2" (2 episodes, equal rewards: std 0)  R_turn 0.2 0.2, R_outcome 0.6 0.6 -> all 0
    group "q3" (1 episode)                          -> 0 (the reference's torch.std would be NaN)
"""

from __future__ import annotations

import math

import pytest

from mtgrpo.trainer.advantages import compute_advantages, group_normalize, token_advantages

#          q1a   q2a   q1b   q3    q1c    q2b   q1d
GROUPS = ["q1", "q2", "q1", "q3", "q1", "q2", "q1"]
TURN = [0.7, 0.2, 0.2, 0.7, 0.0, 0.2, 0.7]
OUTCOME = [2.4, 0.6, 0.4, 1.9, 0.0, 0.6, 0.4]
TOOL = [True, True, True, True, False, False, True]

A_TURN = {"q1a": 0.8426904548, "q1b": -0.5617936366, "q1c": -1.1235872731, "q1d": 0.8426904548}
A_OUT = {"q1a": 1.4769615407, "q1b": -0.3692403852, "q1c": -0.7384807704, "q1d": -0.3692403852}
A_COMB = {"q1a": 1.4134559411, "q1b": -0.4463545077, "q1c": -0.8927090154, "q1d": -0.0743924180}
ORDER = ["q1a", "q2a", "q1b", "q3", "q1c", "q2b", "q1d"]


def _by_name(pairs):
    assert len(pairs) == len(ORDER)
    return dict(zip(ORDER, pairs))


def _approx(pair):
    return pytest.approx(pair, rel=1e-8, abs=1e-9)


def test_mt_grpo_lambda_1():
    got = _by_name(compute_advantages(TURN, OUTCOME, GROUPS, TOOL, algorithm="mt_grpo"))
    # first = A_outcome + A_turn, later = A_outcome
    assert got["q1a"] == _approx((2.3196519955, 1.4769615407))
    assert got["q1b"] == _approx((-0.9310340218, -0.3692403852))
    assert got["q1d"] == _approx((0.4734500697, -0.3692403852))
    # no tool result: A_combined on every token
    assert got["q1c"] == _approx((-0.8927090154, -0.8927090154))
    # std-0 group and group of one: exactly zero, finite
    for name in ("q2a", "q2b", "q3"):
        assert got[name] == (0.0, 0.0)


def test_mt_grpo_lambda_half():
    got = _by_name(compute_advantages(TURN, OUTCOME, GROUPS, TOOL, algorithm="mt_grpo",
                                      turn_coef=0.5))
    # first = A_outcome + 0.5 * A_turn
    assert got["q1a"] == _approx((1.8983067681, 1.4769615407))
    assert got["q1b"] == _approx((-0.6501372035, -0.3692403852))
    assert got["q1d"] == _approx((0.0521048422, -0.3692403852))
    assert got["q1c"] == _approx((-0.8927090154, -0.8927090154))  # lambda does not apply


def test_grpo_or_outcome_everywhere():
    got = _by_name(compute_advantages(TURN, OUTCOME, GROUPS, TOOL, algorithm="grpo_or"))
    for name, a in A_OUT.items():
        assert got[name] == _approx((a, a))  # also for q1c, which had no tool result
    assert got["q2a"] == got["q3"] == (0.0, 0.0)


def test_grpo_mr_combined_everywhere():
    got = _by_name(compute_advantages(TURN, OUTCOME, GROUPS, TOOL, algorithm="grpo_mr",
                                      turn_coef=3.0))  # lambda is ignored
    for name, a in A_COMB.items():
        assert got[name] == _approx((a, a))
    assert got["q2b"] == (0.0, 0.0)


def test_group_normalize_matches_hand_numbers_and_sums_to_zero():
    a = group_normalize([0.7, 0.2, 0.0, 0.7], ["g"] * 4)
    assert list(a) == pytest.approx([A_TURN[n] for n in ("q1a", "q1b", "q1c", "q1d")], rel=1e-8)
    assert math.fsum(a) == pytest.approx(0.0, abs=1e-12)


def test_constant_group_with_rounding_noise_is_exactly_zero():
    # 0.1 + 0.2 != 0.3 in floating point; a constant group must still give exactly 0.
    a = group_normalize([0.1 + 0.2, 0.1 + 0.2, 0.1 + 0.2], [0, 0, 0])
    assert list(a) == [0.0, 0.0, 0.0]


def test_eps_changes_the_scale():
    # group [0, 1]: mean 0.5, unbiased std sqrt(0.5) = 0.7071067812
    a = group_normalize([0.0, 1.0], [1, 1], eps=0.0)
    assert list(a) == pytest.approx([-0.7071067812, 0.7071067812], rel=1e-9)
    b = group_normalize([0.0, 1.0], [1, 1], eps=1.0)
    assert list(b) == pytest.approx([-0.5 / 1.7071067812, 0.5 / 1.7071067812], rel=1e-9)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="unknown algorithm 'ppo'"):
        compute_advantages([0.0], [0.0], [0], [True], algorithm="ppo")
    with pytest.raises(ValueError, match="lengths differ"):
        compute_advantages([0.0, 1.0], [0.0], [0, 0], [True, True], algorithm="mt_grpo")
    with pytest.raises(ValueError, match="finite"):
        group_normalize([float("nan"), 1.0], [0, 0])


def test_token_advantages_split_at_first_tool_result():
    assert token_advantages(2.0, -1.0, 6, 2) == [2.0, 2.0, -1.0, -1.0, -1.0, -1.0]
    assert token_advantages(2.0, -1.0, 3, None) == [2.0, 2.0, 2.0]
    assert token_advantages(2.0, -1.0, 3, 0) == [-1.0, -1.0, -1.0]
    assert token_advantages(2.0, -1.0, 3, 7) == [2.0, 2.0, 2.0]  # index past the end
    assert token_advantages(2.0, -1.0, 0, None) == []
    with pytest.raises(ValueError):
        token_advantages(1.0, 1.0, -1, None)


def test_matches_the_reference_torch_formula_on_random_groups():
    """Same numbers as the reference's torch code (view(-1, G), torch.std, + 1e-4)."""
    torch = pytest.importorskip("torch")
    import random

    rng = random.Random(0)
    n_groups, size = 5, 6
    turn = [rng.choice([0.0, 0.1, 0.2, 0.5, 0.7]) for _ in range(n_groups * size)]
    outcome = [rng.choice([0.0, 0.4, 0.5, 1.5, 1.9]) for _ in range(n_groups * size)]
    tool = [rng.random() < 0.7 for _ in range(n_groups * size)]
    groups = [i // size for i in range(n_groups * size)]

    def reference(r):
        r = torch.tensor(r, dtype=torch.float64)
        mean = r.view(-1, size).mean(dim=1).repeat_interleave(size)
        std = r.view(-1, size).std(dim=1).repeat_interleave(size)
        return ((r - mean) / (std + 1e-4)).tolist()

    a_t, a_o = reference(turn), reference(outcome)
    a_c = reference([t + o for t, o in zip(turn, outcome)])
    got = compute_advantages(turn, outcome, groups, tool, algorithm="mt_grpo", turn_coef=0.7)
    for i, (first, later) in enumerate(got):
        want = (a_o[i] + 0.7 * a_t[i], a_o[i]) if tool[i] else (a_c[i], a_c[i])
        assert (first, later) == pytest.approx(want, abs=1e-9)
