"""Test doubles shared by the rollout tests and benchmarks: a parser and a tool with fixed replies.

A randomly initialised model never writes a well-formed tool call, so to exercise two-turn
episodes against a real server the parser reads every turn as a search call, and the tool
returns one fixed passage.
"""

from __future__ import annotations

from mtgrpo.trainer.parsers import XMLParser
from mtgrpo.trainer.types import ParsedTurn, ToolCall

FIXED_PASSAGE = "Paris is the capital and most populous city of France."


class AlwaysCalls(XMLParser):
    """Reads every turn as a `wiki_search` call and stops turns only by length."""

    @property
    def stop(self):
        return []

    def parse(self, text):
        return ParsedTurn(tool_call=ToolCall("wiki_search", {"query": "fixed"}))


class FixedSearch:
    """A `wiki_search` stand-in that returns :data:`FIXED_PASSAGE` for any query."""

    name = "wiki_search"
    description = "Returns a fixed passage."
    parameters = {"type": "object", "properties": {"query": {"type": "string"}},
                  "required": ["query"]}

    def __call__(self, query):
        return FIXED_PASSAGE
