"""Input channel names the trainer reads (``/opt/ml/input/data/<channel>/``) and what each holds."""

from __future__ import annotations

TRAIN = "train"
EVAL = "eval"
CORPUS = "corpus"
MODEL = "model"
CODE = "code"

CHANNELS: dict[str, str] = {
    TRAIN: "question/aliases records, JSONL or parquet (required)",
    EVAL: "held-out question/aliases records (optional; else a share of train is held out)",
    CORPUS: "passage corpus for wiki_search: passages.jsonl with id/title/text (required when "
            "task_tools has wiki_search)",
    MODEL: "a model directory loadable by transformers (optional; else model_name_or_path)",
    CODE: "the task's Python code: a directory, or one .tar.gz of it like the SDK's source_dir "
          "(optional; put on sys.path before the task_* plug-ins load)",
}
REQUIRED_CHANNELS = (TRAIN, CORPUS)

# SageMaker's pattern for channel names (ChannelName in the service model).
CHANNEL_NAME_PATTERN = r"^[A-Za-z0-9\.\-_]+$"
