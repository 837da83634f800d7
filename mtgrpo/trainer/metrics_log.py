"""Per-step metrics: one JSON line per optimizer step in ``metrics.jsonl``, one line on stdout.

The stdout line is written with :func:`mtgrpo.contract.format_metric_line`, the same module the
renderer builds SageMaker metric regexes from, so what the job prints is what the tuning job reads.
Evaluation values (``eval_reward``, ``eval_exact_match``) join the line of the step they were
measured at: HF Trainer logs a step's training values first and evaluates right after, so a
step whose evaluation is due is held back until the evaluation arrives.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import IO, Any, Mapping

from transformers import TrainerCallback

from mtgrpo.contract import format_metric_line

# TRL / HF log keys -> contract metric names.
_RENAMES = {
    "rewards/turn/mean": "reward_turn",
    "rewards/outcome/mean": "reward_outcome",
}
# Always present in a train line (0 where TRL leaves them out, e.g. kl with beta = 0).
_DEFAULTS = {"kl": 0.0, "weight_sync_seconds": 0.0}
_SKIP = {"epoch", "total_flos", "train_runtime", "train_samples_per_second",
         "train_steps_per_second", "train_loss", "num_tokens", "step_time"}
_UNSAFE = re.compile(r"[^a-z0-9_]+")


def metric_name(key: str) -> str:
    """A log key as a metric-line name (``rewards/components/f1`` -> ``reward_f1``)."""
    if key in _RENAMES:
        return _RENAMES[key]
    if key.startswith("rewards/components/"):
        key = "reward_" + key[len("rewards/components/"):]
    return _UNSAFE.sub("_", key.lower()).strip("_")


class MetricsLogger(TrainerCallback):
    """Appends one JSON object per optimizer step to ``path`` and prints the metric line.

    Only the main process writes. Keys: ``step`` plus every logged value under its metric-line
    name (see :func:`metric_name`); values that are not finite numbers are left out.
    """

    def __init__(self, path: str | Path, stream: IO[str] | None = None,
                 events_dir: str | Path | None = None):
        self.path = Path(path)
        self.stream = stream
        self._pending: dict[str, Any] | None = None
        # TensorBoard events of the same records (tensorboard_log.py); None: none written.
        self.events_dir = Path(events_dir) if events_dir is not None else None
        self._events = None
        # Called with every record written (experiment tracking: mtgrpo/tracking/tracker.py).
        self.listeners: list = []

    def _write(self, record: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        stream = self.stream or sys.stdout
        print(format_metric_line(record), file=stream, flush=True)
        if self.events_dir is not None:
            if self._events is None:  # opened on the first record: only the main process
                from mtgrpo.trainer.tensorboard_log import EventLog
                self._events = EventLog(self.events_dir)
            self._events.add(record)
        for listener in self.listeners:
            listener(record)

    def _flush(self) -> None:
        if self._pending is not None:
            self._write(self._pending)
            self._pending = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        values = {}
        for key, value in logs.items():
            if key in _SKIP or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                continue
            values[metric_name(key)] = value
        if not values:
            return
        step = int(state.global_step)
        is_eval = any(k.startswith("eval_") for k in values)
        if is_eval:
            if self._pending is not None and self._pending["step"] == step:
                self._pending.update(values)
                self._flush()
            else:
                self._flush()
                self._write({"step": step, **values})
            return
        self._flush()
        record = {"step": step, **_DEFAULTS, **values}
        if control.should_evaluate:  # the evaluation of this step is logged next
            self._pending = record
        else:
            self._write(record)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._flush()
            if self._events is not None:
                self._events.close()
                self._events = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, in order."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
