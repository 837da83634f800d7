"""TensorBoard events of the per-step metrics, written next to ``metrics.jsonl``.

:class:`mtgrpo.trainer.metrics_log.MetricsLogger` hands every record it writes to an
:class:`EventLog`, so the events hold exactly the values of ``metrics.jsonl``. In a SageMaker
job the directory is ``/opt/ml/output/data/tensorboard``, the local path the renderer gives
``tensorBoardOutputConfig`` (``job.tensorboard_output_path``), so SageMaker uploads the events
while the job runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

EVENTS_DIR = "tensorboard"


def tag_for(name: str) -> str:
    """A metric-line name as a TensorBoard tag, grouped the way people read them."""
    if name.startswith("eval_"):
        return f"eval/{name[len('eval_'):]}"
    if name.startswith("reward"):
        return f"reward/{name}"
    if name.endswith("_seconds") or name == "tokens_per_second":
        return f"time/{name}"
    if name.startswith("tool") or name == "exact_match" or name.startswith("turn"):
        return f"rollout/{name}"
    return f"train/{name}"


class EventLog:
    """Scalars of one run in ``<directory>`` (one events file per process start)."""

    def __init__(self, directory: str | Path, *, purge_step: int | None = None):
        """``purge_step``: a resumed run's first step; TensorBoard then drops the events of
        earlier runs at that step or later (a run that went on past its last checkpoint)."""
        # torch's writer needs only the `tensorboard` package (the trainer extra), no TF.
        from torch.utils.tensorboard import SummaryWriter
        self.directory = Path(directory)
        self._writer = SummaryWriter(log_dir=str(self.directory), purge_step=purge_step)

    def add(self, record: Mapping[str, Any]) -> None:
        step = int(record["step"])
        for name in sorted(record):
            value = record[name]
            if name == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            self._writer.add_scalar(tag_for(name), float(value), global_step=step)
        self._writer.flush()  # SageMaker uploads what is on disk; a crash loses nothing

    def close(self) -> None:
        self._writer.close()
