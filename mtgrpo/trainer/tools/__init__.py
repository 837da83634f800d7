"""Tools the agent can call, and the one function that executes a parsed call."""

from mtgrpo.trainer.tools.base import Tool, execute_tool_call
from mtgrpo.trainer.tools.wiki_search import WikiSearch, tokenizer_budget

__all__ = ["Tool", "WikiSearch", "execute_tool_call", "tokenizer_budget"]
