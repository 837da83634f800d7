"""``wiki_search``: BM25 search over a local passage corpus, cut to a token budget.

No network, ever: the corpus is a local directory (in a job, the ``corpus`` channel). A prebuilt
index in ``corpus_dir/index/`` is loaded (memory-mapped) when present; otherwise the passages
are indexed in memory at start. After ``__init__`` every structure is read-only and passages are
read with ``os.pread``, so concurrent calls from the rollout's thread pool need no lock.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mtgrpo.errors import Problem, UserError
from mtgrpo.trainer.tools import corpus
from mtgrpo.trainer.tools.corpus import Passage

_WORD = re.compile(r"\S+")
# A later passage cut to fewer tokens than this (or a quarter of the budget) is left out.
_MIN_PARTIAL = 32


def count_words(text: str) -> int:
    """Whitespace words: the default token count when no tokenizer is given."""
    return len(_WORD.findall(text))


def truncate_words(text: str, limit: int) -> str:
    """The text up to the end of its ``limit``-th word, original spacing kept."""
    if limit <= 0:
        return ""
    for i, match in enumerate(_WORD.finditer(text), start=1):
        if i == limit:
            return text[: match.end()]
    return text


def tokenizer_budget(tokenizer: Any) -> tuple[Callable[[str], int], Callable[[str, int], str]]:
    """``(count_tokens, truncate)`` from a Hugging Face tokenizer (anything with encode/decode).

    The count is of the result text alone; inside the chat template the same text may split
    one token differently at its edges, which the budget's margin absorbs.
    """
    def count_tokens(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    def truncate(text: str, limit: int) -> str:
        ids = tokenizer.encode(text, add_special_tokens=False)
        return text if len(ids) <= limit else tokenizer.decode(ids[:max(limit, 0)])

    return count_tokens, truncate


class WikiSearch:
    """Searches Wikipedia passages and returns the best matches, with their titles.

    Args:
        corpus_dir: directory holding ``passages.jsonl`` (and optionally ``index/``).
        top_k: passages returned per query.
        max_tokens: budget of the whole result, so that the answer turn still fits.
        count_tokens / truncate: the policy tokenizer's count and cut (both or neither);
            whitespace words when not given.
    """

    name = "wiki_search"
    description = ("Searches a local copy of Wikipedia and returns the most relevant passage "
                   "with its article title. Use a few specific keywords, such as names, "
                   "places or dates from the question.")
    parameters = {
        "type": "object",
        "properties": {"query": {"type": "string", "minLength": 1,
                                 "description": "keywords to search for"}},
        "required": ["query"],
        "additionalProperties": False,
    }
    example_args = {"query": "Eiffel Tower height"}

    def __init__(self, corpus_dir: str | os.PathLike, *, top_k: int = 1, max_tokens: int = 256,
                 count_tokens: Callable[[str], int] | None = None,
                 truncate: Callable[[str, int], str] | None = None) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if (count_tokens is None) != (truncate is None):
            raise ValueError("give both count_tokens and truncate, or neither")
        self.corpus_dir = Path(corpus_dir)
        if not self.corpus_dir.is_dir():
            raise UserError(Problem(str(self.corpus_dir), "", "corpus directory not found",
                                    f"a directory with {corpus.PASSAGES_FILE} "
                                    "(see docs/corpus.md)"))
        self.top_k = top_k
        self.max_tokens = max_tokens
        self.count_tokens = count_tokens or count_words
        self.truncate = truncate or truncate_words
        if (self.corpus_dir / corpus.INDEX_DIR).is_dir():
            self._retriever, self._offsets = corpus.load_index(self.corpus_dir)
            self.prebuilt = True
        else:
            self._retriever, self._offsets = corpus.build_retriever(
                self.corpus_dir / corpus.PASSAGES_FILE)
            self.prebuilt = False
        self._vocab = self._retriever.vocab_dict
        self._fd = os.open(self.corpus_dir / corpus.PASSAGES_FILE, os.O_RDONLY)

    def __len__(self) -> int:
        return int(len(self._offsets))

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()

    def __enter__(self) -> "WikiSearch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- search ----------------------------------------------------------------------------
    def search(self, query: str, k: int | None = None) -> list[tuple[Passage, float]]:
        """The best ``k`` passages with their BM25 scores; only passages sharing a word."""
        k = self.top_k if k is None else k
        ids = [self._vocab[t] for t in corpus.tokenize_query(query) if t in self._vocab]
        if not ids:
            return []
        scores = self._retriever.get_scores(ids)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        # Highest score first; ties by corpus order, so results never depend on the partition.
        ranked = sorted(top.tolist(), key=lambda i: (-float(scores[i]), i))
        return [(self._read(i), float(scores[i])) for i in ranked if scores[i] > 0]

    def _read(self, index: int) -> Passage:
        start = int(self._offsets[index])
        end = int(self._offsets[index + 1]) if index + 1 < len(self._offsets) else None
        length = (end - start) if end is not None else os.fstat(self._fd).st_size - start
        raw = os.pread(self._fd, length, start)
        # A line can be followed by blank lines, which belong to no passage; JSON ignores them.
        value = json.loads(raw)
        return Passage(str(value["id"]), value["title"], value["text"])

    def __call__(self, query: str) -> str:
        """Search for ``query`` and return the top passages as text, within the token budget."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty string")
        hits = self.search(query)
        if not hits:
            # The query is not echoed: a result that repeats the model's own guess would earn
            # the answer-in-result reward for nothing.
            return "No results found."
        return self.format_hits([p for p, _ in hits])

    def format_hits(self, passages: list[Passage]) -> str:
        """Passages as ``Title: ...`` blocks, best first, cut to ``max_tokens``.

        Whole passages are kept while they fit; the first that does not is cut to the rest of
        the budget, unless that would leave it too short to be worth reading (then it and all
        later passages are dropped). The best passage is always there, cut if need be.
        """
        text = ""
        for passage in passages:
            block = f"Title: {passage.title}\n{passage.text}"
            candidate = f"{text}\n\n{block}" if text else block
            if self.count_tokens(candidate) <= self.max_tokens:
                text = candidate
                continue
            cut = self.truncate(candidate, self.max_tokens).rstrip()
            added = cut[len(text):] if cut.startswith(text) else ""
            if not text or self.count_tokens(added) >= min(_MIN_PARTIAL, self.max_tokens // 4):
                text = cut
            break
        return text
