"""Tools the agent can call, and the one function that executes a parsed call.

``WikiSearch`` (numpy, bm25s) is imported on first use, so ``import mtgrpo.task`` (which needs
only the ``Tool`` protocol) works on the light install.
"""

from typing import Any

from mtgrpo.trainer.tools.base import Tool, execute_tool_call

__all__ = ["Tool", "WikiSearch", "execute_tool_call", "tokenizer_budget"]


def __getattr__(name: str) -> Any:
    if name in ("WikiSearch", "tokenizer_budget"):
        from mtgrpo.trainer.tools import wiki_search

        return getattr(wiki_search, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
