"""The metric line format: how the trainer prints metrics and the regexes that read them back.

The trainer's logger writes one line per logged step with :func:`format_metric_line`; the
renderer builds SageMaker ``metricDefinitions`` with :func:`metric_definitions`. Both import this
module, so the tuning objective ``eval_reward`` and the logged metrics cannot drift apart.

A line looks like::

    mtgrpo-metrics: step=12 reward=0.45 eval_reward=0.3125 loss=-0.0123

Every value follows a space, so ``reward=`` never matches inside ``eval_reward=``. The same
``name=value`` shape is what Katib's StdOut metrics collector reads.
"""

from __future__ import annotations

import math
import re
from typing import Mapping

PREFIX = "mtgrpo-metrics:"
_NUMBER = r"[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

# Metrics the trainer logs (at least these keys; see docs/metrics.md). The renderer defines a
# SageMaker metric for each; `eval_reward` is the default tuning objective.
METRICS: dict[str, str] = {
    "step": "optimizer step (1-based)",
    "reward": "mean total reward of the step's rollouts",
    "eval_reward": "mean total reward on the held-out split (logged on eval steps)",
    "exact_match": "share of rollouts whose answer exactly matches a gold alias",
    "eval_exact_match": "exact match on the held-out split (logged on eval steps)",
    "tool_success_rate": "share of tool calls that executed without error",
    "loss": "policy loss of the step",
    "kl": "mean KL divergence to the reference model (0 when beta = 0)",
    "grad_norm": "gradient norm before clipping",
    "learning_rate": "learning rate used by the step",
    "rollout_seconds": "wall time spent sampling rollouts",
    "weight_sync_seconds": "wall time spent pushing weights to the sampler",
    "step_seconds": "wall time of the whole step",
    "tokens_per_second": "policy tokens processed per second by the learner",
    "gpu_peak_gib": "peak GPU memory allocated by torch in this process during the step "
                    "(rollouts on the training GPU included), GiB; the number `mtgrpo plan` "
                    "estimates; GPU jobs only",
}

# Logged by GPU processes only (a CPU run's lines never hold them).
GPU_METRICS = frozenset({"gpu_peak_gib"})

DEFAULT_OBJECTIVE = "eval_reward"


def metric_regex(name: str) -> str:
    """The regex whose first (only) capture group is the value of metric ``name``."""
    if not _NAME.match(name):
        raise ValueError(f"metric name {name!r} must match {_NAME.pattern}")
    return f"{re.escape(PREFIX)}.* {name}=({_NUMBER})"


def metric_definitions(names: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """SageMaker metric definitions (``Name``/``Regex``), sorted by name, for the given metrics."""
    chosen = METRICS if names is None else names
    return [{"Name": name, "Regex": metric_regex(name)} for name in sorted(chosen)]


def format_metric_line(values: Mapping[str, float | int]) -> str:
    """One metric line. ``step`` first, the rest sorted; non-finite values are left out."""
    parts = [PREFIX]
    ordered = sorted(values, key=lambda k: (k != "step", k))
    for name in ordered:
        if not _NAME.match(name):
            raise ValueError(f"metric name {name!r} must match {_NAME.pattern}")
        value = values[name]
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int):
            parts.append(f"{name}={value}")
        elif isinstance(value, float) and math.isfinite(value):
            parts.append(f"{name}={value:.6g}")
    return " ".join(parts)


def parse_metric_line(line: str) -> dict[str, float]:
    """Read a metric line back (for tests and `mtgrpo logs`); empty if it is not one."""
    if PREFIX not in line:
        return {}
    body = line.split(PREFIX, 1)[1]
    found = {}
    for token in body.split():
        name, _, value = token.partition("=")
        if _NAME.match(name) and re.fullmatch(_NUMBER, value):
            found[name] = float(value)
    return found
