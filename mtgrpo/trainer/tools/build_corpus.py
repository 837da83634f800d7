"""Build a ``wiki_search`` corpus: passages.jsonl and its BM25 index, from a Wikipedia dump.

    python -m mtgrpo.trainer.tools.build_corpus --wiki-dump DUMP --out DIR [--words 100]
    python -m mtgrpo.trainer.tools.build_corpus --out DIR      # index an existing passages.jsonl

DUMP is one of:
  * a WikiExtractor ``--json`` output directory (``AA/wiki_00``, ...: one JSON article a line
    with ``id``, ``title``, ``text``), read in sorted path order;
  * a ``.jsonl`` file of such articles (``.jsonl.gz``/``.jsonl.bz2`` too);
  * a ``.parquet`` file, or a directory of them, with ``title`` and ``text`` columns (the
    Hugging Face ``wikipedia`` / ``wikimedia/wikipedia`` dumps; ``id`` optional);
  * TriviaQA's own rows (``.jsonl`` or ``.parquet`` of the ``rc`` / ``rc.wikipedia``
    configurations) with ``entity_pages``: their evidence Wikipedia pages, each title once. A
    corpus that holds the answer pages of every question, far smaller than all of Wikipedia.

Each article's text is cut into passages of about ``--words`` words (paragraphs are packed
together, a long paragraph is split, a short tail joins the passage before it); each passage
keeps its article's title. Everything is written to temporary files and renamed into place, so
an interrupted build leaves no half-written corpus.
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from mtgrpo.errors import Problem, UserError
from mtgrpo.trainer.tools import corpus


def chunk_words(text: str, words: int = 100) -> list[str]:
    """Cut ``text`` into passages of about ``words`` words.

    Paragraphs (blank-line or newline separated) are packed into a passage while it stays
    within ``words``; a paragraph longer than that is split; a final piece shorter than a
    quarter of ``words`` is joined to the passage before it.
    """
    if words < 1:
        raise ValueError(f"words must be >= 1, got {words}")
    paragraphs = [p.split() for p in text.splitlines()]
    chunks: list[list[str]] = []
    current: list[str] = []
    for para in paragraphs:
        if not para:
            continue
        if current and len(current) + len(para) > words:
            chunks.append(current)
            current = []
        while len(para) > words:
            head, para = para[:words], para[words:]
            if current:
                chunks.append(current)
                current = []
            chunks.append(head)
        current = current + para
    if current:
        if chunks and len(current) < max(1, words // 4):
            chunks[-1] = chunks[-1] + current
        else:
            chunks.append(current)
    return [" ".join(c) for c in chunks]


def _open_text(path: Path):
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if name.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _json_articles(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        yield from _json_lines(path)
    except (UnicodeDecodeError, OSError, EOFError) as exc:  # not UTF-8, a broken .gz/.bz2
        raise UserError(Problem(str(path), "", f"unreadable ({type(exc).__name__}: {exc})",
                                "UTF-8 JSON lines, optionally .gz or .bz2")) from None


def _json_lines(path: Path) -> Iterator[tuple[str, dict]]:
    with _open_text(path) as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(Problem(where, "", f"invalid JSON: {exc.msg}",
                                        "one JSON article a line (WikiExtractor --json)")) from None


def _parquet_articles(path: Path) -> Iterator[tuple[str, dict]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise UserError(Problem(str(path), "", f"unreadable parquet file: {exc}",
                                "a parquet file with title and text columns")) from None
    names = set(parquet.schema_arrow.names)
    missing = sorted({"title", "text"} - names)
    if missing and "entity_pages" in names:
        columns = ["entity_pages"]  # TriviaQA rows: only their evidence pages are read
    elif missing:
        raise UserError(Problem(str(path), ", ".join(missing), "column is missing",
                                "columns title, text (and optionally id), or TriviaQA's "
                                "entity_pages"))
    else:
        columns = [c for c in ("id", "title", "text") if c in names]
    row = 0
    for batch in parquet.iter_batches(batch_size=1024, columns=columns):
        for article in batch.to_pylist():
            yield f"{path}:row {row}", article
            row += 1


def _dump_files(dump: Path) -> list[Path]:
    if dump.is_file():
        return [dump]
    if not dump.is_dir():
        raise UserError(Problem(str(dump), "", "Wikipedia dump not found",
                                "a WikiExtractor output directory, a .jsonl or a .parquet file"))
    files = sorted(p for p in dump.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(dump).parts))
    if not files:
        raise UserError(Problem(str(dump), "", "directory holds no files",
                                "WikiExtractor output (AA/wiki_00, ...) or .parquet files"))
    return files


def _evidence_pages(row: dict, where: str) -> Iterator[dict]:
    """The Wikipedia pages of one TriviaQA row (``entity_pages``: title and wiki_context lists)."""
    pages = row.get("entity_pages")
    allowed = 'entity_pages {"title": [str], "wiki_context": [str]}'
    if not isinstance(pages, dict):
        raise UserError(Problem(where, "entity_pages", "must be an object", allowed))
    titles, texts = pages.get("title"), pages.get("wiki_context")
    if not isinstance(titles, list) or not isinstance(texts, list) or len(titles) != len(texts):
        raise UserError(Problem(where, "entity_pages", "needs title and wiki_context lists of "
                                "equal length", allowed))
    for title, text in zip(titles, texts):
        yield {"title": title, "text": text}


def read_articles(dump: Path) -> Iterator[dict]:
    """Every article of a dump as ``{"id", "title", "text"}``, in a deterministic order.

    TriviaQA rows (with ``entity_pages``) give their evidence pages instead, each title once.
    """
    seen_pages: set[str] = set()
    for path in _dump_files(dump):
        reader = _parquet_articles if path.suffix.lower() == ".parquet" else _json_articles
        for where, row in reader(path):
            if not isinstance(row, dict):
                raise UserError(Problem(where, "", "must be a JSON object",
                                        "an article {id, title, text}"))
            if "entity_pages" in row and "text" not in row:
                for page in _evidence_pages(row, where):
                    if isinstance(page["title"], str) and page["title"] in seen_pages:
                        continue
                    yield _checked(page, where)
                    seen_pages.add(page["title"])
                continue
            yield _checked(row, where)


def _checked(article: dict, where: str) -> dict:
    for key in ("title", "text"):
        if not isinstance(article.get(key), str):
            raise UserError(Problem(where, key, "must be a string",
                                    "an article {id, title, text}"))
    return article


def write_passages(articles: Iterable[dict], out: Path, *, words: int = 100,
                   min_words: int = 0) -> int:
    """Chunk ``articles`` into ``out/passages.jsonl`` (written atomically). Returns the count."""
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".passages-", suffix=".jsonl", dir=out)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for number, article in enumerate(articles):
                title = " ".join(article["title"].split())
                article_id = str(article.get("id") if article.get("id") is not None else number)
                text = article["text"]
                # WikiExtractor's older output repeats the title as the first line.
                first, _, rest = text.partition("\n")
                if first.strip() == title:
                    text = rest
                if len(text.split()) < max(min_words, 1):
                    continue
                for i, passage in enumerate(chunk_words(text, words)):
                    handle.write(json.dumps({"id": f"{article_id}_{i}", "title": title,
                                             "text": passage}, ensure_ascii=False) + "\n")
                    count += 1
        if count == 0:
            raise UserError(Problem(str(out), "", "the dump produced no passages",
                                    "articles with non-empty text"))
        os.replace(tmp_name, out / corpus.PASSAGES_FILE)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return count


def build_corpus(out: Path, *, wiki_dump: Path | None = None, words: int = 100,
                 min_words: int = 0, index: bool = True) -> dict[str, int]:
    """Write passages (from ``wiki_dump``, if given) and the index. Returns counts."""
    counts: dict[str, int] = {}
    if wiki_dump is not None:
        counts["passages"] = write_passages(read_articles(wiki_dump), out, words=words,
                                            min_words=min_words)
    if index:
        counts["indexed"] = corpus.write_index(out)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mtgrpo.trainer.tools.build_corpus",
        description="Build a wiki_search corpus (passages.jsonl + BM25 index) from a "
                    "Wikipedia dump, or index an existing passages.jsonl.")
    parser.add_argument("--wiki-dump", type=Path,
                        help="WikiExtractor --json output directory, a .jsonl(.gz/.bz2) of "
                             "articles, or .parquet file(s) with title/text columns; "
                             "omit to index OUT/passages.jsonl as it is")
    parser.add_argument("--out", type=Path, required=True, help="corpus directory to write")
    parser.add_argument("--words", type=int, default=100, help="words per passage (100)")
    parser.add_argument("--min-words", type=int, default=20,
                        help="skip articles shorter than this (stubs, lists; default 20)")
    parser.add_argument("--no-index", action="store_true",
                        help="write passages.jsonl only (wiki_search then indexes at start)")
    args = parser.parse_args(argv)
    try:
        if args.words < 1:
            raise UserError(Problem("", "--words", f"{args.words} is out of range", "int >= 1"))
        if args.wiki_dump is None and args.no_index:
            raise UserError(Problem("", "--no-index", "nothing to do without --wiki-dump",
                                    "--wiki-dump DUMP, or drop --no-index"))
        counts = build_corpus(args.out, wiki_dump=args.wiki_dump, words=args.words,
                              min_words=args.min_words, index=not args.no_index)
    except UserError as err:
        for line in err.lines():
            print(f"error: {line}", file=sys.stderr)
        return 1
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    print(f"{args.out}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
