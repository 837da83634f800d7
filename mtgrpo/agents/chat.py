"""OpenAI chat messages to prompt token ids, and sampled text to an OpenAI assistant message.

The prompt of a call is built in one of two ways:

- **extension**: the request's messages are the previous call's messages, then the assistant
  message that call returned (same tool calls; same text when it made none), then new messages
  (tool results, user turns). The prompt is then the previous call's prompt ids + its sampled
  ids + the ids of the new messages only, rendered with the chat template after a placeholder
  assistant message (as ``ToolEnvironment`` frames tool results): the history is never
  re-tokenized, so it is exactly what was sampled.
- **full render**: anything else (the first call, a rewritten or shortened history) is rendered
  whole with the chat template. An earlier assistant message is then re-tokenized from its
  text; if that differs from what was sampled, the recorder sees a prompt that does not extend
  its sequence and splits the episode (counted).

Tools (the request's ``tools``) are shown to the model by the task's parser
(``parser.system_prompt``), in the system message after the agent's own system text; the
model's tool-call text is parsed back with ``parser.parse`` into OpenAI ``tool_calls``; a
``role: tool`` message is framed with ``parser.format_tool_result`` in the ``tool_role`` the
run uses (``user`` by default, as the environment does).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

_ASSISTANT = "MTGRPOASSISTANTPLACEHOLDER"
_SYSTEM = "MTGRPOSYSTEMPLACEHOLDER"
_USER = "MTGRPOUSERPLACEHOLDER"


class RequestError(ValueError):
    """The request cannot be served; its message is the one-line reason sent back (HTTP 400)."""


@dataclass(frozen=True)
class SchemaTool:
    """A tool the agent declared (OpenAI ``tools`` entry): what the parser's prompt shows. The
    agent runs its tools itself; this object is never called."""

    name: str
    description: str
    parameters: Mapping[str, Any]

    def __call__(self, **_: Any) -> str:
        raise RuntimeError(f"tool {self.name} runs in the agent, not in the trainer")


def schema_tools(tools: Any) -> list[SchemaTool]:
    """The request's ``tools`` as :class:`SchemaTool` s (function tools only)."""
    if tools in (None, []):
        return []
    if not isinstance(tools, list):
        raise RequestError("tools must be a list of {type: function, function: {...}}")
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type", "function") != "function" \
                or not isinstance(fn.get("name"), str):
            raise RequestError(f"tools[{i}] must be {{type: function, function: {{name, "
                               "description, parameters}}}}")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        out.append(SchemaTool(fn["name"], str(fn.get("description") or ""), dict(params)))
    return out


def content_text(content: Any) -> str:
    """A message's content as text: a string, or the text parts of a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text"):
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
            else:
                raise RequestError("only text content parts are supported")
        return "".join(parts)
    raise RequestError(f"message content must be a string or a list of parts, got "
                       f"{type(content).__name__}")


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            return raw
    return raw


@dataclass(frozen=True)
class Message:
    """A message reduced to what reaches the model: role, text and tool calls
    ``((name, canonical JSON arguments), ...)``."""

    role: str
    content: str
    tool_calls: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, raw: Any, index: int) -> "Message":
        if not isinstance(raw, dict) or not isinstance(raw.get("role"), str):
            raise RequestError(f"messages[{index}] must be an object with a role")
        role = raw["role"]
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            raise RequestError(f"messages[{index}]: role {role!r} is not supported (system, "
                               "developer, user, assistant, tool)")
        calls = []
        for call in raw.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise RequestError(f"messages[{index}].tool_calls: each needs function.name")
            args = json.dumps(_arguments(fn.get("arguments")), sort_keys=True,
                              ensure_ascii=False)
            calls.append((fn["name"], args))
        return cls(role, content_text(raw.get("content")).strip(), tuple(calls))

    def same_reply(self, other: "Message") -> bool:
        """Whether this assistant message is the reply ``other`` (what a call returned): the
        same tool calls, or with none the same text (frameworks often drop or rewrite the text
        that came with a tool call)."""
        if self.role != "assistant" or other.role != "assistant":
            return False
        if self.tool_calls or other.tool_calls:
            return self.tool_calls == other.tool_calls
        return self.content == other.content


def messages_of(raw: Any) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise RequestError("messages must be a non-empty list")
    return [Message.of(m, i) for i, m in enumerate(raw)]


class ChatRenderer:
    """Renders messages with the tokenizer's chat template and the task's parser."""

    def __init__(self, tokenizer, parser, *, tool_role: str = "user"):
        self.tokenizer = tokenizer
        self.parser = parser
        self.tool_role = tool_role
        eos = tokenizer.eos_token_id
        self._eos_text = tokenizer.convert_ids_to_tokens(eos) if eos is not None else None
        self._eos = eos

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    # -- messages to template dicts ------------------------------------------------------------
    def call_text(self, name: str, arguments: str) -> str:
        """A tool call in the model's format (a tag parser's ``call_tag`` and ``args_key``)."""
        tag = getattr(self.parser, "call_tag", "tool_call")
        key = getattr(self.parser, "args_key", "arguments")
        body = json.dumps({"name": name, key: json.loads(arguments)}, ensure_ascii=False)
        return f"<{tag}>\n{body}\n</{tag}>"

    def template_messages(self, messages: Sequence[Message],
                          tools: Sequence[SchemaTool]) -> list[dict]:
        out: list[dict] = []
        for m in messages:
            if m.role == "tool":
                out.append({"role": self.tool_role,
                            "content": self.parser.format_tool_result(m.content)})
            elif m.role == "assistant":
                text = "\n".join([m.content] * bool(m.content)
                                 + [self.call_text(n, a) for n, a in m.tool_calls])
                out.append({"role": "assistant", "content": text})
            else:
                out.append({"role": m.role, "content": m.content})
        if tools:
            tool_prompt = self.parser.system_prompt(list(tools))
            if out and out[0]["role"] == "system":
                out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + tool_prompt}
            else:
                out.insert(0, {"role": "system", "content": tool_prompt})
        return out

    # -- prompts -----------------------------------------------------------------------------------
    def render(self, messages: Sequence[Message], tools: Sequence[SchemaTool]) -> list[int]:
        """The whole conversation, rendered once, ending with the generation prompt."""
        if messages[-1].role == "assistant":
            raise RequestError("the last message is an assistant message; continuing one is "
                               "not supported (use /v1/completions)")
        return self.encode(self._template(self.template_messages(messages, tools)))

    def _template(self, messages: list[dict]) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True)
        except Exception as err:  # noqa: BLE001 - templates raise anything (jinja, exceptions)
            raise RequestError(" ".join(f"the chat template cannot render these messages: "
                                        f"{err}".split())) from None

    def tail(self, new: Sequence[Message], sampled: Sequence[int]) -> list[int]:
        """The ids of ``new`` messages after an assistant turn that sampled ``sampled``: from
        closing that turn to the next generation prompt (the sampled EOS is not repeated)."""
        if new[-1].role == "assistant" or any(m.role == "system" for m in new):
            raise RequestError("cannot extend")  # the caller falls back to a full render
        head = [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _USER},
                {"role": "assistant", "content": _ASSISTANT}]
        text = self._template(head + self.template_messages(new, ()))
        if _ASSISTANT not in text:
            raise RequestError("the chat template drops the assistant message")
        after = text[text.index(_ASSISTANT) + len(_ASSISTANT):]
        if sampled and self._eos is not None and sampled[-1] == self._eos \
                and self._eos_text and after.startswith(self._eos_text):
            after = after[len(self._eos_text):]
        return self.encode(after)

    # -- replies -----------------------------------------------------------------------------------
    def reply(self, text: str, call_id: str) -> tuple[dict, Message]:
        """The OpenAI assistant message for sampled ``text`` and its reduced :class:`Message`.

        A parsed tool call becomes ``tool_calls`` (the text before it stays the content); an
        answer or plain text is the content as sampled.
        """
        parsed = self.parser.parse(text)
        call = parsed.tool_call
        if call is None:
            return {"role": "assistant", "content": text}, Message("assistant", text.strip())
        tag = getattr(self.parser, "call_tag", None)
        before = text.split(f"<{tag}>", 1)[0].strip() if tag else ""
        arguments = json.dumps(call.args, ensure_ascii=False)
        message = {"role": "assistant", "content": before or None,
                   "tool_calls": [{"id": call_id, "type": "function",
                                   "function": {"name": call.name, "arguments": arguments}}]}
        reduced = Message("assistant", before,
                          ((call.name, json.dumps(call.args, sort_keys=True,
                                                  ensure_ascii=False)),))
        return message, reduced
