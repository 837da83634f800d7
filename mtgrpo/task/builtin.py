"""The built-in TriviaQA task, written with the public task API.

Tools: ``wiki_search`` (BM25 over the ``corpus`` channel). Rewards: the paper's seven
(:mod:`mtgrpo.trainer.rewards`). Parsers: ``xml`` and ``qwen`` (:mod:`mtgrpo.trainer.parsers`).
Records: ``triviaqa`` (:func:`mtgrpo.trainer.data.load_records`: raw TriviaQA rows or flat
question/aliases records). Each built-in is a factory taking the :class:`TaskContext`; heavy
modules are imported only when a built-in is used.
"""

from __future__ import annotations

from typing import Any, Callable

from mtgrpo.task.api import TaskContext


def wiki_search(context: TaskContext) -> Any:
    from mtgrpo.errors import Problem, UserError
    from mtgrpo.trainer.tools.wiki_search import WikiSearch, tokenizer_budget

    corpus_dir = getattr(context.paths, "corpus_dir", None)
    if corpus_dir is None:
        raise UserError(Problem("", "corpus_dir", "the wiki_search tool needs a corpus",
                                "the corpus channel, or corpus_dir"))
    budget = tokenizer_budget(context.tokenizer) if context.tokenizer is not None else (None,
                                                                                         None)
    return WikiSearch(corpus_dir, top_k=context.config.search_top_k,
                      max_tokens=context.config.search_max_tokens, count_tokens=budget[0],
                      truncate=budget[1])


def xml_parser(context: TaskContext) -> Any:
    from mtgrpo.trainer.parsers import XMLParser

    return XMLParser()


def qwen_parser(context: TaskContext) -> Any:
    from mtgrpo.trainer.parsers import QwenParser

    return QwenParser()


def triviaqa_records(context: TaskContext) -> Callable[..., Any]:
    from mtgrpo.trainer.data import load_records

    return load_records


TOOLS: dict[str, Callable[[TaskContext], Any]] = {"wiki_search": wiki_search}
PARSERS: dict[str, Callable[[TaskContext], Any]] = {"xml": xml_parser, "qwen": qwen_parser}
RECORDS: dict[str, Callable[[TaskContext], Any]] = {"triviaqa": triviaqa_records}


def reward(name: str, weight: float) -> Any:
    from mtgrpo.trainer.rewards import builtin_reward

    return builtin_reward(name, weight)
