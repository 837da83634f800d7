"""Question/answer records from local JSONL or parquet files (a job's ``train``/``eval`` channel).

Two record shapes are accepted, line by line (or row by row):

raw TriviaQA   ``{"question": ..., "question_id": ..., "answer": {"value": ...,
               "aliases": [...], "normalized_aliases": [...]}}`` (the Hugging Face ``trivia_qa``
               rows; other keys are ignored)
flat           ``{"question": ..., "aliases": [...]}`` or ``"answers"`` instead of ``"aliases"``
               (a list or one string), with an optional ``"id"``

A bad record is a ``UserError`` naming the file, the line (or row) and the key. A JSONL line
longer than ``MAX_RECORD_BYTES`` is refused with its line number and size, counted without being
read into memory; a shorter one is held once as bytes, then once as text while it is parsed. Each
record keeps where it came from (``QARecord.where``) for later checks (the prompt budget).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Sequence

from mtgrpo.errors import Problem, UserError
from mtgrpo.trainer.types import QARecord

SUFFIXES = (".jsonl", ".parquet")
# A question must fit max_prompt_length tokens; other keys of a raw TriviaQA row may be large
# (its `rc` rows carry Wikipedia pages), so the line cap is generous. Nothing bigger is read.
MAX_RECORD_BYTES = 32 * 2**20
_CHUNK = 2**20
_COLUMNS = ("question", "question_id", "id", "answer", "aliases", "answers")
_SHAPES = ('{"question": str, "answer": {"value": str, "aliases": [str]}} (TriviaQA) or '
           '{"question": str, "aliases" or "answers": [str], "id": optional str}')


def _strings(value: Any) -> list[str] | None:
    """A string or a list of strings as a list; None for anything else."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _unique(values: Sequence[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for v in values:
        v = v.strip()
        if v:
            seen.setdefault(v, None)
    return tuple(seen)


def _lines(handle, limit: int | None = None):
    """``(line number, bytes or None, size)`` of every line of a binary file, read in 1 MiB
    pieces; a line over ``limit`` bytes (default ``MAX_RECORD_BYTES``) comes as None with its
    size: counted and skipped, never held whole."""
    limit = MAX_RECORD_BYTES if limit is None else limit
    lineno = 0
    while True:
        buf = bytearray()
        size = 0
        while True:
            chunk = handle.readline(_CHUNK)
            size += len(chunk)
            if buf is not None:
                if size > limit:
                    buf = None  # too long: count the rest without keeping it
                else:
                    buf += chunk
            if not chunk or chunk.endswith(b"\n"):
                break
        if size == 0:
            return
        lineno += 1
        item = (lineno, buf, size)
        del buf  # the caller's reference is the only one: it can drop the bytes
        yield item


def parse_record(value: Any, where: str, default_id: str) -> QARecord:
    """One record of either shape; ``where`` is ``file:line`` (or ``file:row N``) for errors."""
    if not isinstance(value, dict):
        raise UserError(Problem(where, "", f"must be a JSON object, got {type(value).__name__}",
                                _SHAPES))
    # A parquet table has every column in every row: null means absent.
    value = {k: v for k, v in value.items() if v is not None}
    question = value.get("question")
    if not isinstance(question, str) or not question.strip():
        problem = "required key is missing" if question is None else "must be a non-empty string"
        raise UserError(Problem(where, "question", problem, _SHAPES))
    if "answer" in value and isinstance(value["answer"], dict):
        answer = value["answer"]
        found: dict[str, list[str]] = {}
        for key in ("value", "aliases", "normalized_aliases"):
            if answer.get(key) is None:
                continue
            items = _strings(answer[key])
            if items is None:
                raise UserError(Problem(where, f"answer.{key}", "must be a string or a list "
                                        "of strings", _SHAPES))
            found[key] = items
        # normalized_aliases repeat the aliases in normalised form: only a fallback.
        aliases = _unique(found.get("value", []) + found.get("aliases", [])) or _unique(
            found.get("normalized_aliases", []))
        alias_key = "answer.aliases"
        record_id = value.get("question_id", value.get("id"))
    else:
        alias_key = "aliases" if "aliases" in value else "answers"
        if alias_key not in value and "answer" in value:
            alias_key = "answer"  # a flat {"question", "answer": "Paris"} record
        if alias_key not in value:
            raise UserError(Problem(where, "aliases", "required key is missing (or "
                                    "'answers', or an 'answer' object)", _SHAPES))
        items = _strings(value[alias_key])
        if items is None:
            raise UserError(Problem(where, alias_key, "must be a string or a list of strings",
                                    _SHAPES))
        aliases = _unique(items)
        record_id = value.get("id")
    if not aliases:
        raise UserError(Problem(where, alias_key, "has no non-empty answer", _SHAPES))
    if record_id is None:
        record_id = default_id
    elif not isinstance(record_id, (str, int)) or isinstance(record_id, bool):
        raise UserError(Problem(where, "id", f"must be a string, got "
                                f"{type(record_id).__name__}", _SHAPES))
    return QARecord(id=str(record_id), question=question.strip(), aliases=aliases, where=where)


def load_records(path: str | Path) -> list[QARecord]:
    """Every record of a ``.jsonl`` or ``.parquet`` file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(Problem(str(path), "", "data file not found",
                                "a .jsonl or .parquet file of question/answer records"))
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        rows = _parquet_rows(path)
        records = [parse_record(row, f"{path}:row {i}", f"{path.stem}-{i}")
                   for i, row in enumerate(rows)]
    elif suffix == ".jsonl":
        records = []
        with path.open("rb") as handle:
            for lineno, raw, size in _lines(handle):
                where = f"{path}:{lineno}"
                if raw is None:
                    raise UserError(Problem(where, "", f"the record is {size} bytes, over the "
                                            f"{MAX_RECORD_BYTES} bytes a record may have",
                                            "records of at most that size (a question must "
                                            "fit max_prompt_length tokens)"))
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise UserError(Problem(where, "", f"not UTF-8 ({exc.reason} at byte "
                                            f"{exc.start})", "UTF-8 text")) from None
                del raw  # the text is the one copy from here
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(Problem(where, "", f"invalid JSON: {exc.msg} at column "
                                            f"{exc.colno}", "one JSON object a line")) from None
                del line
                records.append(parse_record(value, where, f"{path.stem}-{lineno}"))
                del value
    else:
        raise UserError(Problem(str(path), "", f"unsupported file type '{path.suffix}'",
                                ", ".join(SUFFIXES)))
    if not records:
        raise UserError(Problem(str(path), "", "has no records", "at least one record"))
    return records


def _parquet_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        # Only the columns a record needs: TriviaQA's `rc` parquet also carries whole
        # Wikipedia pages and search results per question (gigabytes).
        wanted = [c for c in names if c in _COLUMNS]
        table = pq.read_table(path, columns=wanted)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise UserError(Problem(str(path), "", f"unreadable parquet file: {exc}",
                                "a parquet file of question/answer records")) from None
    return table.to_pylist()


def find_data_file(directory: str | Path) -> Path:
    """The one ``.jsonl``/``.parquet`` file of a channel directory (hidden files ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(Problem(str(directory), "", "data directory not found",
                                "a directory with one .jsonl or .parquet file"))
    files = sorted(p for p in directory.iterdir()
                   if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in SUFFIXES)
    if not files:
        raise UserError(Problem(str(directory), "", "no .jsonl or .parquet file found",
                                "exactly one .jsonl or .parquet file"))
    if len(files) > 1:
        names = ", ".join(p.name for p in files)
        raise UserError(Problem(str(directory), "", f"several data files ({names}); name one "
                                "with train_file/eval_file", "exactly one .jsonl or .parquet file"))
    return files[0]


def split_eval(records: Sequence[QARecord], fraction: float,
               seed: int) -> tuple[list[QARecord], list[QARecord]]:
    """Hold out ``round(fraction * n)`` records (at least one when fraction > 0 and n > 1).

    Deterministic for a given seed; both parts keep the input order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n = len(records)
    n_eval = round(fraction * n)
    if fraction > 0 and n > 1:
        n_eval = min(max(n_eval, 1), n - 1)
    held = set(random.Random(seed).sample(range(n), n_eval))
    train = [r for i, r in enumerate(records) if i not in held]
    evals = [r for i, r in enumerate(records) if i in held]
    return train, evals
