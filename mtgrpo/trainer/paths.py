"""Where a training run reads its inputs and writes its outputs (local run or SageMaker job)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    """Resolved locations for one run. ``mtgrpo train`` and ``mtgrpo.sagemaker`` both build one.

    model: a local model directory (the `model` channel or a path) or a hub id.
    train_file / eval_file: question/aliases records (JSONL or parquet); eval_file may be None.
    corpus_dir: the passage corpus for wiki_search (None: a task without it).
    output_dir: metrics.jsonl and the eval summary.
    model_dir: the final model (safetensors, tokenizer, config).
    checkpoint_dir: checkpoints; the newest complete one is resumed at start.
    """

    model: str
    train_file: Path
    eval_file: Path | None
    corpus_dir: Path | None
    output_dir: Path
    model_dir: Path
    checkpoint_dir: Path
