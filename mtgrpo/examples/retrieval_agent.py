"""The retrieval task as an agent of its own: a plain ``openai``-client tool loop.

What the built-in loop does for the TriviaQA / code-lookup task, written the way a team writes
its agent: ask the model with the ``wiki_search`` tool declared, run the search it asks for,
send the result back as a ``role: tool`` message, return the final answer. Trained with
``agent: mtgrpo.examples.retrieval_agent:RetrievalAgent`` (docs/agents.md); the task's rubric
scores the answer it returns, the turn rewards score each call.

The class is a factory: built once at start-up with the run's TaskContext, it opens the search
index of the ``corpus`` channel (the task's ``wiki_search`` tool, as the built-in loop would).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class RetrievalAgent:
    """``agent(base_url, record, make_client)``: at most ``max_tool_calls`` searches, then the
    answer (the run's ``max_tool_calls``; the built-in loop's limits, so both train alike)."""

    def __init__(self, context) -> None:
        from mtgrpo.task.builtin import wiki_search

        self.search = wiki_search(context)
        self.max_tool_calls = int(context.config.max_tool_calls)
        self.tools = [{"type": "function", "function": {
            "name": self.search.name, "description": self.search.description,
            "parameters": self.search.parameters}}]

    async def __call__(self, base_url: str, record, make_client) -> Any:
        client = make_client()
        messages: list[dict] = [{"role": "user", "content": record.question}]
        for calls in range(self.max_tool_calls + 1):
            reply = await client.chat.completions.create(
                model="policy", messages=messages, tools=self.tools)
            message = reply.choices[0].message
            if not message.tool_calls:
                return message.content  # the answer (the rubric reads its <answer> tag)
            if calls == self.max_tool_calls:
                return None  # out of searches without answering
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls:
                messages.append({"role": "tool", "tool_call_id": call.id,
                                 "content": await self.run_tool(call)})
        return None

    async def run_tool(self, call) -> str:
        if call.function.name != self.search.name:
            return f"Error: unknown tool {call.function.name!r}"
        try:
            args = json.loads(call.function.arguments)
            result = await asyncio.to_thread(self.search, **args)
        except Exception as err:  # noqa: BLE001 - the model reads what went wrong
            return f"Error: {type(err).__name__}: {err}"
        return result or "Error: no result"
