"""Per-step metrics: one JSON line per optimizer step in ``metrics.jsonl``, one line on stdout.

The stdout line is written with :func:`mtgrpo.contract.format_metric_line`, the same module the
renderer builds SageMaker metric regexes from, so what the job prints is what the tuning job reads.
Evaluation values (``eval_reward``, ``eval_exact_match``) join the line of the step they were
measured at: HF Trainer logs a step's training values first and evaluates right after, so a
step whose evaluation is due is held back until the evaluation arrives.

Resume continues the record exactly: when training begins (the resumed checkpoint's step is
known then; 0 for a fresh start) :meth:`MetricsLogger.truncate` cuts ``metrics.jsonl`` back to
that step, TensorBoard discards later events of earlier runs (``purge_step``), and every
``truncate_hooks`` function gets the step (a tracking run's "truncate to step N" point). So a
step is recorded exactly once whichever way the previous run ended (a stop, a crash, a full
disk). A full disk while writing is one line naming the file (``mtgrpo.trainer.disk``).
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Mapping

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
                 events_dir: str | Path | None = None,
                 truncate_hooks: Iterable[Callable[[int], None]] = ()):
        self.path = Path(path)
        # Called with the step training (re)starts from: drop everything logged after it.
        self.truncate_hooks = list(truncate_hooks)
        self._purge_step: int | None = None
        self.stream = stream
        self._pending: dict[str, Any] | None = None
        # TensorBoard events of the same records (tensorboard_log.py); None: none written.
        self.events_dir = Path(events_dir) if events_dir is not None else None
        self._events = None

    def truncate(self, step: int) -> None:
        """Keep only records of steps ``<= step`` (0: none): ``metrics.jsonl`` rewritten
        atomically, TensorBoard told to purge later steps, every truncate hook called."""
        from mtgrpo.trainer.disk import disk_full_guard

        self._purge_step = step + 1
        if self.path.exists():
            with disk_full_guard(self.path, self.path.stat().st_size, "metrics.jsonl"):
                truncate_metrics(self.path, step)
        for hook in self.truncate_hooks:
            hook(step)

    def _write(self, record: Mapping[str, Any]) -> None:
        from mtgrpo.trainer.disk import disk_full_guard

        line = json.dumps(record, sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with disk_full_guard(self.path, len(line.encode("utf-8")), "a metrics record"):
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
        stream = self.stream or sys.stdout
        print(format_metric_line(record), file=stream, flush=True)
        if self.events_dir is not None:
            with disk_full_guard(self.events_dir, 4096, "TensorBoard events"):
                if self._events is None:  # opened on the first record: only the main process
                    from mtgrpo.trainer.tensorboard_log import EventLog
                    self._events = EventLog(self.events_dir, purge_step=self._purge_step)
                self._events.add(record)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.truncate(int(state.global_step))

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


def truncate_metrics(path: str | Path, step: int) -> int:
    """Rewrite ``path`` keeping the records of steps ``<= step``, line by line (never the
    whole file in memory), to a temporary file then renamed. Returns the records kept.
    A torn last line (a crash mid-write) is dropped."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    kept = 0
    with path.open("rb") as src, tmp.open("wb") as dst:
        for raw in src:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) \
                    and record["step"] <= step:
                dst.write(raw if raw.endswith(b"\n") else raw + b"\n")
                kept += 1
    tmp.replace(path)
    return kept


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, in order."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
