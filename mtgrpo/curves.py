"""Training curves as one PNG: reward, exact match, tool use, loss, gradient norm and the
step timings against the step, several runs side by side (one colour per run).

Deterministic: the same records give the same PNG bytes (matplotlib's Agg canvas without the
pyplot state, its bundled DejaVu font, no date or software version in the PNG metadata), so a
committed plot changes only when the numbers do. matplotlib comes with the ``[plot]`` extra.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from mtgrpo.errors import Problem, UserError

# (panel title, [(metric, style label)]): solid = training rollouts, dashed = held-out eval.
PANELS: list[tuple[str, list[tuple[str, str]]]] = [
    ("reward", [("reward", "train"), ("eval_reward", "eval")]),
    ("exact match", [("exact_match", "train"), ("eval_exact_match", "eval")]),
    ("tool calls per episode", [("tool_calls_per_episode", "train")]),
    ("tool success rate", [("tool_success_rate", "train"), ("eval_tool_success_rate", "eval")]),
    ("policy loss", [("loss", "train")]),
    ("gradient norm", [("grad_norm", "before clipping")]),
    ("seconds per step", [("rollout_seconds", "rollout"), ("learn_seconds", "learn"),
                          ("weight_sync_seconds", "weight sync")]),
    ("learner tokens per second", [("tokens_per_second", "train")]),
]
_RATES = {"exact match", "tool success rate"}  # shares: drawn on 0..1
_STYLES: list[Any] = ["-", "--", ":"]  # matplotlib types these as literals
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise UserError(Problem("mtgrpo plot", "matplotlib", "is not installed",
                                "pip install 'mtgrpo[plot]'")) from None
    matplotlib.use("Agg", force=True)
    return matplotlib


def with_learn_seconds(record: Mapping[str, Any]) -> dict[str, Any]:
    """``learn_seconds`` = step time minus rollout time, as the trainer splits a step."""
    out = dict(record)
    if "step_seconds" in out and "rollout_seconds" in out:
        out["learn_seconds"] = max(out["step_seconds"] - out["rollout_seconds"], 0.0)
    return out


def plot_runs(runs: Sequence[tuple[str, Sequence[Mapping[str, Any]]]], output: Path | str, *,
              title: str = "") -> Path:
    """Draw ``[(label, records), ...]`` into ``output`` (PNG); returns the path."""
    if not runs:
        raise UserError(Problem("mtgrpo plot", "RUN", "no runs to plot",
                                "metrics.jsonl files, run directories or job names"))
    matplotlib = _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    with matplotlib.rc_context({"font.family": "DejaVu Sans", "font.size": 9,
                                "axes.titlesize": 10, "svg.hashsalt": "mtgrpo"}):
        fig = Figure(figsize=(16, 7.5), dpi=100)
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, 4)
        prepared = [(label, [with_learn_seconds(r) for r in records]) for label, records in runs]
        for ax, (panel, metrics) in zip(axes.flat, PANELS):
            ax.set_title(panel)
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
            drawn = []
            for i, (_label, records) in enumerate(prepared):
                color = _COLORS[i % len(_COLORS)]
                for j, (metric, style) in enumerate(metrics):
                    points = [(r["step"], r[metric]) for r in records
                              if metric in r and "step" in r]
                    if not points:
                        continue
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, _STYLES[j % len(_STYLES)], color=color, linewidth=1.4,
                            marker="o" if len(points) < 30 else None, markersize=3)
                    if (metric, style) not in drawn:
                        drawn.append((metric, style))
            if panel in _RATES:
                ax.set_ylim(-0.03, 1.03)
            if not drawn:
                ax.text(0.5, 0.5, "not logged", ha="center", va="center",
                        transform=ax.transAxes, color="#7f7f7f")
            elif len(metrics) > 1:
                ax.legend([Line2D([], [], linestyle=_STYLES[metrics.index(m) % len(_STYLES)],
                                  color="#333333") for m in drawn],
                          [style for _, style in drawn], loc="best", fontsize=8)
        top = 0.95
        if title:
            fig.suptitle(title, y=0.995, fontsize=12)
            top = 0.91
        fig.legend([Line2D([], [], color=_COLORS[i % len(_COLORS)], linewidth=2)
                    for i in range(len(prepared))],
                   [label for label, _ in prepared], loc="upper center",
                   bbox_to_anchor=(0.5, top + 0.04), ncol=min(len(prepared), 6),
                   frameon=False, fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, top))
        buffer = io.BytesIO()
        # No Software/date chunks: the bytes depend only on the drawing.
        fig.savefig(buffer, format="png", metadata={"Software": None})
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    partial.write_bytes(buffer.getvalue())
    os.replace(partial, output)  # never a half-written PNG
    return output
