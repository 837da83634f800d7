"""Per-call credit when the policy chooses how many calls to make: exact expected gradients.

A tiny agent policy with two parameters: ``theta`` (at each step, make another tool call with
probability sigmoid(theta), at most two calls, else answer) and ``phi`` (each call's query is
good with probability sigmoid(phi); a good query's tool result earns the call's turn reward 1,
a bad one 0). Every outcome of a group of episodes is enumerated with its probability, so the
expected gradient of each estimator (sum over calls of advantage x score of the call's
decision) is computed exactly, no sampling (docs/agents.md, "Credit").
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mtgrpo.trainer.advantages import call_advantages, compute_advantages

GROUP = 3
MAX_CALLS = 2


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def episodes(theta: float, phi: float):
    """Every episode: (probability, good flags of its calls, per-call scores (d/dtheta,
    d/dphi), ending with the answer call)."""
    p, g = sigmoid(theta), sigmoid(phi)
    out = []
    for calls in range(MAX_CALLS + 1):
        for goods in itertools.product((True, False), repeat=calls):
            prob = p ** calls * (1 - p if calls < MAX_CALLS else 1.0)
            scores = []
            for good in goods:
                prob *= g if good else 1 - g
                scores.append((1 - p, (1 - g) if good else -g))  # chose to call, this query
            scores.append((-p if calls < MAX_CALLS else 0.0, 0.0))  # chose to answer
            out.append((prob, goods, scores))
    assert math.isclose(sum(e[0] for e in out), 1.0)
    return out


def expected_gradient(theta: float, phi: float, outcome, estimator: str) -> np.ndarray:
    """E[sum over the group's calls of advantage x score], every group enumerated."""
    total = np.zeros(2)
    for group in itertools.product(episodes(theta, phi), repeat=GROUP):
        prob = math.prod(e[0] for e in group)
        outcomes = [outcome(e[1]) for e in group]
        turns = [[float(x) for x in e[1]] + [None] for e in group]  # the answer: no reward
        if estimator == "summed_turns":  # one advantage per episode: outcome + sum of turns
            episode_adv = compute_advantages([sum(e[1]) for e in group], outcomes,
                                              [0] * GROUP, [True] * GROUP,
                                              algorithm="grpo_mr")
            advs = [[a] * len(t) for (a, _), t in zip(episode_adv, turns)]
        else:
            advs = call_advantages(outcomes, turns, [0] * GROUP, algorithm=estimator)
        for (_, _, scores), row in zip(group, advs):
            for a, score in zip(row, scores):
                total += prob * a * np.asarray(score)
    return total


def constant(goods) -> float:
    return 0.0


def found(goods) -> float:
    return float(any(goods))


@pytest.mark.parametrize("theta, phi", [(0.0, 0.0), (0.8, -0.5), (-1.2, 1.0)])
def test_turn_credit_does_not_pay_for_making_calls(theta, phi):
    """The outcome does not depend on the calls: MT-GRPO's per-call turn credit leaves the
    number of calls alone (zero expected gradient on theta, exactly) and still credits good
    queries (positive on phi); summing the turn rewards per episode pays for every extra
    call (positive on theta)."""
    mt = expected_gradient(theta, phi, constant, "mt_grpo")
    summed = expected_gradient(theta, phi, constant, "summed_turns")
    mean = expected_gradient(theta, phi, constant, "grpo_mr")
    assert mt[0] == pytest.approx(0.0, abs=1e-12)
    assert mt[1] > 1e-3
    assert summed[0] > 1e-3
    # The mean-turn baseline pays for the first call (0 -> a mean), less than the sum does.
    assert 0.0 < mean[0] < summed[0]


@pytest.mark.parametrize("theta, phi", [(0.0, 0.0), (0.8, -0.5), (-1.2, 1.0)])
def test_the_number_of_calls_follows_the_outcome(theta, phi):
    """The outcome needs a good call: on theta, MT-GRPO's expected gradient is exactly the
    outcome-only estimator's (the turn term sums to zero over the group's calls), and points
    where the true gradient of the expected outcome does."""
    mt = expected_gradient(theta, phi, found, "mt_grpo")
    outcome_only = expected_gradient(theta, phi, found, "grpo_or")
    assert mt[0] == pytest.approx(outcome_only[0], abs=1e-12)
    p, g = sigmoid(theta), sigmoid(phi)
    # P(found) = p g + p^2 (1-g) g  ->  d/dtheta = p(1-p) (g + 2 p (1-g) g) > 0
    true = p * (1 - p) * (g + 2 * p * (1 - g) * g)
    assert true > 0 and mt[0] > 0
    # and the query gets the turn credit on top of the outcome's
    assert mt[1] > outcome_only[1] > 0


def test_call_advantages_shapes_and_pooling():
    adv = call_advantages([1.0, 0.0], [[1.0, None], [0.0, 0.0, None]], [0, 0],
                          algorithm="mt_grpo")
    assert [len(r) for r in adv] == [2, 3]
    # The answer calls carry the outcome advantage only; turn advantages pool the 3 calls.
    assert adv[0][1] == pytest.approx(-adv[1][2])
    assert adv[0][0] - adv[0][1] > 0 > adv[1][0] - adv[1][2]
    assert call_advantages([1.0], [[0.5]], [0], algorithm="mt_grpo") == [[0.0]]  # group of one
    with pytest.raises(ValueError, match="lengths differ"):
        call_advantages([1.0], [], [0], algorithm="mt_grpo")
