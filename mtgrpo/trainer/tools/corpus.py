"""The passage corpus on disk: ``passages.jsonl`` and its prebuilt BM25 index.

Layout of a corpus directory (the ``corpus`` channel of a job)::

    passages.jsonl          one JSON object a line: {"id": str, "title": str, "text": str}
    index/                  optional; written by ``python -m mtgrpo.trainer.tools.build_corpus``
      *.index.npy, vocab.index.json, params.index.json   the bm25s index
      offsets.npy           byte offset of each passage's line in passages.jsonl
      mtgrpo-index.json     what the index was built from (passage count, file size, tokenizer)

Passages are never all held in memory: a search reads the lines of its hits with ``os.pread``
at their offsets, which is safe from many threads at once and scales to a full Wikipedia.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from mtgrpo.errors import Problem, UserError

PASSAGES_FILE = "passages.jsonl"
INDEX_DIR = "index"
OFFSETS_FILE = "offsets.npy"
META_FILE = "mtgrpo-index.json"
INDEX_FORMAT = 1

# The tokenizer of both the index and the queries: bm25s's default split (lower case, words of
# two or more word characters) without English stopwords and without stemming. It is recorded in
# the index metadata so that an index built differently is refused instead of silently
# mismatching the queries.
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
STOPWORDS = "en"
TOKENIZER_ID = {"pattern": TOKEN_PATTERN, "stopwords": STOPWORDS, "stemmer": None, "lower": True}


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str


def passage_problem(value: object, where: str) -> Problem | None:
    """Why one parsed line of passages.jsonl is not a passage, or None."""
    allowed = 'a JSON object {"id": string, "title": string, "text": non-empty string}'
    if not isinstance(value, dict):
        return Problem(where, "", f"must be a JSON object, got {type(value).__name__}", allowed)
    for key in ("id", "title", "text"):
        if key not in value:
            return Problem(where, key, "required key is missing", allowed)
    if not isinstance(value["id"], (str, int)) or isinstance(value["id"], bool):
        return Problem(where, "id", f"must be a string, got {type(value['id']).__name__}", allowed)
    for key in ("title", "text"):
        if not isinstance(value[key], str):
            return Problem(where, key, f"must be a string, got {type(value[key]).__name__}",
                           allowed)
    if not value["text"].strip():
        return Problem(where, "text", "is empty", allowed)
    return None


def scan_passages(path: Path) -> Iterator[tuple[int, Passage]]:
    """Every passage of ``path`` with its line's byte offset; bad lines raise ``UserError``."""
    if not path.is_file():
        raise UserError(Problem(str(path), "", "passage file not found",
                                f"a {PASSAGES_FILE} file, one JSON passage a line "
                                "(see docs/corpus.md)"))
    offset = 0
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                value = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UserError(Problem(where, "", f"invalid JSON: {exc}",
                                        "one JSON object a line")) from None
            problem = passage_problem(value, where)
            if problem is not None:
                raise UserError(problem)
            yield start, Passage(str(value["id"]), value["title"], value["text"])


def search_text(passage: Passage) -> str:
    """What BM25 indexes for a passage: its title (which matters for Wikipedia) and text."""
    return f"{passage.title}\n{passage.text}"


def tokenize_corpus(texts: list[str]):
    """bm25s token ids of many texts (the index side)."""
    import bm25s

    return bm25s.tokenize(texts, lower=True, token_pattern=TOKEN_PATTERN, stopwords=STOPWORDS,
                          show_progress=False)


_TOKEN_RE = re.compile(TOKEN_PATTERN)
_STOPWORDS: frozenset[str] | None = None


def tokenize_query(query: str) -> list[str]:
    """The query's tokens, split exactly as :func:`tokenize_corpus` splits passages."""
    global _STOPWORDS
    if _STOPWORDS is None:
        from bm25s.tokenization import STOPWORDS_EN

        _STOPWORDS = frozenset(STOPWORDS_EN)
    return [t for t in _TOKEN_RE.findall(query.lower()) if t not in _STOPWORDS]


def build_retriever(passages_path: Path):
    """Index ``passages_path`` in memory. Returns ``(bm25s.BM25, offsets array)``."""
    import bm25s

    offsets, texts = [], []
    for offset, passage in scan_passages(passages_path):
        offsets.append(offset)
        texts.append(search_text(passage))
    if not texts:
        raise UserError(Problem(str(passages_path), "", "has no passages",
                                "at least one JSON passage line"))
    retriever = bm25s.BM25()
    retriever.index(tokenize_corpus(texts), show_progress=False)
    return retriever, np.asarray(offsets, dtype=np.int64)


def write_index(corpus_dir: Path) -> int:
    """Build ``corpus_dir/index/`` from ``corpus_dir/passages.jsonl``. Returns the passage count.

    The index is written to a temporary directory beside it and renamed into place, so a
    failed or interrupted build never leaves a half-written index behind.
    """
    passages_path = corpus_dir / PASSAGES_FILE
    retriever, offsets = build_retriever(passages_path)
    final = corpus_dir / INDEX_DIR
    tmp = Path(tempfile.mkdtemp(prefix=".index-", dir=corpus_dir))
    try:
        retriever.save(str(tmp), show_progress=False)
        np.save(tmp / OFFSETS_FILE, offsets)
        meta = {"format": INDEX_FORMAT, "passages": int(len(offsets)),
                "passages_bytes": passages_path.stat().st_size, "tokenizer": TOKENIZER_ID}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return int(len(offsets))


def load_index(corpus_dir: Path):
    """Load a prebuilt index. Returns ``(bm25s.BM25, offsets)``; a stale one is refused."""
    import bm25s

    index_dir = corpus_dir / INDEX_DIR
    passages_path = corpus_dir / PASSAGES_FILE
    if not passages_path.is_file():
        raise UserError(Problem(str(passages_path), "", "passage file not found",
                                f"a {PASSAGES_FILE} beside {INDEX_DIR}/ (see docs/corpus.md)"))
    rebuild = ("rebuild it: python -m mtgrpo.trainer.tools.build_corpus --out "
               f"{corpus_dir}")
    meta_path = index_dir / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(Problem(str(meta_path), "", f"unreadable index metadata ({exc})",
                                rebuild)) from None
    if meta.get("format") != INDEX_FORMAT or meta.get("tokenizer") != TOKENIZER_ID:
        raise UserError(Problem(str(meta_path), "format",
                                "index was built by another version or tokenizer", rebuild))
    size = passages_path.stat().st_size
    if meta.get("passages_bytes") != size:
        raise UserError(Problem(str(meta_path), "passages_bytes",
                                f"index was built for a {meta.get('passages_bytes')}-byte "
                                f"{PASSAGES_FILE}, but it has {size} bytes now", rebuild))
    try:
        offsets = np.load(index_dir / OFFSETS_FILE)
        retriever = bm25s.BM25.load(str(index_dir), mmap=True, show_progress=False)
    except (OSError, ValueError, KeyError) as exc:  # a missing or truncated index file
        raise UserError(Problem(str(index_dir), "", f"unreadable index ({type(exc).__name__}: "
                                f"{exc})", rebuild)) from None
    if len(offsets) != meta.get("passages") or retriever.scores["num_docs"] != len(offsets):
        raise UserError(Problem(str(index_dir), "", "index and offsets disagree on the "
                                "number of passages", rebuild))
    return retriever, offsets
