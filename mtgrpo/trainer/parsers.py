"""Tool-call formats: the system prompt, stop strings, parsing and format rewards of each.

Two formats, chosen by ``tool_format``:

``xml``   the MT-GRPO paper's tags: ``<reasoning>...</reasoning>`` then either
          ``<tool>{"name": ..., "args": {...}}</tool>`` (answered by ``<result>...</result>``)
          or ``<answer>...</answer>``.
``qwen``  Qwen's native function calling: ``<think>...</think>`` then either
          ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (answered by
          ``<tool_response>...</tool_response>``) or ``<answer>...</answer>``.

A turn ends at the first stop string (the sampler stops there and keeps the stop string), so
:meth:`TagParser.parse` reads a turn only up to its first stop string: a second call, or an
answer after a call, was never part of the turn. The format rewards follow the reference
implementation's ``XMLParser`` (verifiers v0.1, as vendored by Multi-Turn-RL-Agent), unscaled
to [0, 1]; the weights live in :class:`mtgrpo.trainer.rewards.RewardWeights`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Sequence

from mtgrpo.trainer.tools.base import Tool
from mtgrpo.trainer.types import Episode, ParsedTurn, ToolCall

PARSER_NAMES = ("xml", "qwen")


def _tag_content(text: str, tag: str, *, strip: bool = True) -> str | None:
    """The content of the first complete ``<tag>...</tag>`` (the reference's regex), or None."""
    match = re.search(rf"<{tag}>\s*(.*?)\s*</{tag}>", text, re.DOTALL)
    if match is None:
        return None
    return match.group(1).strip() if strip else match.group(1)


@dataclass(frozen=True)
class TagParser:
    """One tag-based tool-call format. Subclasses only set the tag names and the prompt text.

    ``fields`` is the reference's field schema: each entry a tuple of alternative tags, the
    first one canonical (``(("reasoning",), ("tool", "answer"))``). The first field set must
    start a well-formed turn and the last must end it.
    """

    name: str
    reasoning_tag: str
    call_tag: str
    args_key: str
    result_tag: str
    answer_tag: str = "answer"

    @property
    def fields(self) -> tuple[tuple[str, ...], ...]:
        return ((self.reasoning_tag,), (self.call_tag, self.answer_tag))

    @property
    def stop(self) -> list[str]:
        """Strings that end an assistant turn (the sampler keeps them in the output)."""
        return [f"</{self.call_tag}>", f"</{self.answer_tag}>"]

    # -- prompt -----------------------------------------------------------------------------
    def system_prompt(self, tools: Sequence[Tool]) -> str:
        raise NotImplementedError

    def example_call(self, tool: Tool) -> str:
        """A well-formed call of ``tool`` with placeholder values, as the model should write it."""
        args = {key: _placeholder(schema) for key, schema in
                tool.parameters.get("properties", {}).items()}
        example = getattr(tool, "example_args", None)
        if isinstance(example, dict):
            args = dict(example)
        call = json.dumps({"name": tool.name, self.args_key: args}, ensure_ascii=False)
        return f"<{self.call_tag}>\n{call}\n</{self.call_tag}>"

    # -- parsing ----------------------------------------------------------------------------
    def cut_at_stop(self, text: str) -> str:
        """The turn up to and including its first stop string (all of it when there is none)."""
        ends = [text.find(s) + len(s) for s in self.stop if s in text]
        return text[: min(ends)] if ends else text

    def parse(self, text: str) -> ParsedTurn:
        """Read one assistant turn: reasoning, then a tool call or an answer (or an error).

        A turn with no tool tag and no answer tag parses to an empty ``ParsedTurn``; an
        attempted but malformed call (or an unclosed answer) sets ``tool_error``.
        """
        turn = self.cut_at_stop(text)
        reasoning = _tag_content(turn, self.reasoning_tag)
        open_call, close_call = f"<{self.call_tag}>", f"</{self.call_tag}>"
        open_answer, close_answer = f"<{self.answer_tag}>", f"</{self.answer_tag}>"
        call_at = turn.find(open_call)
        answer_at = turn.find(open_answer)
        # Whichever element the model opened first is what it did in this turn.
        if answer_at >= 0 and (call_at < 0 or answer_at < call_at):
            answer = _tag_content(turn, self.answer_tag)
            if answer is None:
                return ParsedTurn(reasoning=reasoning,
                                  tool_error=f"{open_answer} is not closed with {close_answer}")
            return ParsedTurn(reasoning=reasoning, answer=answer)
        if call_at >= 0:
            body = _tag_content(turn[call_at:], self.call_tag)
            if body is None:
                return ParsedTurn(reasoning=reasoning,
                                  tool_error=f"{open_call} is not closed with {close_call}")
            call, error = self._parse_call(body)
            return ParsedTurn(reasoning=reasoning, tool_call=call, tool_error=error)
        if close_call in turn:
            return ParsedTurn(reasoning=reasoning,
                              tool_error=f"{close_call} without an opening {open_call}")
        if close_answer in turn:
            return ParsedTurn(reasoning=reasoning,
                              tool_error=f"{close_answer} without an opening {open_answer}")
        return ParsedTurn(reasoning=reasoning)

    def _parse_call(self, body: str) -> tuple[ToolCall | None, str | None]:
        expected = f'{{"name": ..., "{self.args_key}": {{...}}}}'
        if not body:
            return None, f"empty <{self.call_tag}>; expected JSON {expected}"
        try:
            value: Any = json.loads(body)
        except json.JSONDecodeError as exc:
            return None, f"invalid JSON in <{self.call_tag}>: {exc.msg} at position {exc.pos}"
        if not isinstance(value, dict):
            return None, (f"tool call must be a JSON object {expected}, "
                          f"got {type(value).__name__}")
        unknown = sorted(set(value) - {"name", self.args_key})
        if unknown:
            return None, (f"unexpected keys {', '.join(unknown)} in tool call "
                          f"(allowed: name, {self.args_key})")
        name = value.get("name")
        if not isinstance(name, str) or not name.strip():
            return None, f'tool call needs a "name" string; expected {expected}'
        if self.args_key not in value:
            return None, f'tool call needs "{self.args_key}"; expected {expected}'
        args = value[self.args_key]
        if not isinstance(args, dict):
            return None, (f'"{self.args_key}" must be a JSON object, '
                          f"got {type(args).__name__}")
        return ToolCall(name=name.strip(), args=args), None

    def format_tool_result(self, text: str) -> str:
        """The content of the environment message that carries a tool's result."""
        return f"<{self.result_tag}>\n{text}\n</{self.result_tag}>"

    def extract_tool_result(self, text: str) -> str:
        """The tool's own text inside an environment message (the message itself if untagged)."""
        inner = _tag_content(text, self.result_tag)
        return text if inner is None else inner

    def final_answer(self, episode: Episode) -> str | None:
        """The episode's answer: ``episode.answer``, else the last parsed answer of any turn."""
        if episode.answer is not None:
            return episode.answer
        for text in reversed(episode.assistant_texts):
            answer = self.parse(text).answer
            if answer is not None:
                return answer
        return None

    # -- format rewards (reference: verifiers v0.1 XMLParser) --------------------------------
    def format_reward(self, episode: Episode) -> float:
        """Mean over assistant turns of a [0, 1] format score.

        Per turn: 0.4 x (share of field sets present) + 0.2 if every tag used is properly
        closed + 0.2 if the turn starts with the reasoning tag + 0.2 if it ends with a call or
        answer closing tag. The reference's spacing check was always true (it compared the same
        regex with and without strip) and gave 0.2 to untagged text; here that 0.2 requires at
        least one complete field and no unclosed tag.
        """
        texts = episode.assistant_texts
        if not texts:
            return 0.0
        return sum(self._turn_format_score(t) for t in texts) / len(texts)

    def _turn_format_score(self, content: str) -> float:
        present_sets = 0
        any_field = False
        well_formed = True
        for alternatives in self.fields:
            set_present = False
            for tag in alternatives:
                if _tag_content(content, tag) is not None:
                    any_field = set_present = True
                    if content.count(f"<{tag}>") != content.count(f"</{tag}>"):
                        well_formed = False
                elif f"<{tag}>" in content or f"</{tag}>" in content:
                    set_present = True  # the reference counts a broken tag as present
                    well_formed = False
            present_sets += set_present
        stripped = content.strip()
        score = 0.0
        if any_field:
            score += 0.4 * present_sets / len(self.fields)
            if well_formed:
                score += 0.2
        if any(stripped.startswith(f"<{tag}>") for tag in self.fields[0]):
            score += 0.2
        if any(stripped.endswith(f"</{tag}>") for tag in self.fields[-1]):
            score += 0.2
        return score

    def xml_count_reward(self, episode: Episode) -> float:
        """Tag-count score in [0, 1] (reference ``get_xml_reward_func``, unscaled).

        Per turn, for each tag used: ``1 - |#open - 1|`` and ``1 - |#close - 1|``, averaged over
        the checks (0 for a turn without tags); the mean over turns, clamped to [0, 1].
        """
        texts = episode.assistant_texts
        if not texts:
            return 0.0
        scores = []
        for content in texts:
            score, checks = 0, 0
            for alternatives in self.fields:
                for tag in alternatives:
                    opens, closes = content.count(f"<{tag}>"), content.count(f"</{tag}>")
                    if opens or closes:
                        score += (1 - abs(opens - 1)) + (1 - abs(closes - 1))
                        checks += 2
            scores.append(score / checks if checks else 0.0)
        return min(1.0, max(0.0, sum(scores) / len(scores)))


def _placeholder(schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return {"string": "...", "integer": 1, "number": 1.0, "boolean": True,
            "array": [], "object": {}}.get(kind, "...")


def _describe_tool(tool: Tool) -> str:
    lines = [f"{tool.name}: {tool.description.strip()}", "Arguments:"]
    props = tool.parameters.get("properties", {})
    required = set(tool.parameters.get("required", []))
    for key, schema in props.items():
        kind = schema.get("type", "any")
        need = "required" if key in required else "optional"
        desc = schema.get("description", "")
        lines.append(f"  - {key} ({kind}, {need}): {desc}".rstrip())
    return "\n".join(lines)


class XMLParser(TagParser):
    """The MT-GRPO paper's format: ``<reasoning>``, ``<tool>`` JSON, ``<result>``, ``<answer>``."""

    def __init__(self) -> None:
        super().__init__(name="xml", reasoning_tag="reasoning", call_tag="tool",
                         args_key="args", result_tag="result")

    def system_prompt(self, tools: Sequence[Tool]) -> str:
        descriptions = "\n\n".join(_describe_tool(t) for t in tools)
        example = self.example_call(tools[0]) if tools else ""
        return (
            "You have access to the following tools to help answer the question:\n\n"
            f"{descriptions}\n\n"
            "In each turn:\n"
            "1. Think through your reasoning inside <reasoning> tags.\n"
            "2. Then either call a tool by writing a JSON object with \"name\" (the tool) and "
            "\"args\" (its arguments) inside <tool> tags, or give your final answer inside "
            "<answer> tags.\n"
            "3. A tool's output comes back inside <result> tags.\n\n"
            "Example of a tool call:\n"
            "<reasoning>\nI need to look this up.\n</reasoning>\n"
            f"{example}\n\n"
            "Example of a final answer:\n"
            "<reasoning>\nThe result names the answer.\n</reasoning>\n"
            "<answer>\nthe short answer\n</answer>\n\n"
            "Answer with the shortest phrase that answers the question. Use only the tools and "
            "arguments listed above."
        )


class QwenParser(TagParser):
    """Qwen's native format: ``<think>``, ``<tool_call>`` JSON, ``<tool_response>``, ``<answer>``."""

    def __init__(self) -> None:
        super().__init__(name="qwen", reasoning_tag="think", call_tag="tool_call",
                         args_key="arguments", result_tag="tool_response")

    def system_prompt(self, tools: Sequence[Tool]) -> str:
        signatures = "\n".join(
            json.dumps({"type": "function", "function": {
                "name": t.name, "description": t.description.strip(),
                "parameters": dict(t.parameters)}}, ensure_ascii=False, sort_keys=True)
            for t in tools)
        example = self.example_call(tools[0]) if tools else ""
        return (
            "Answer the question. You may call functions to help you.\n\n"
            "# Tools\n\n"
            "You are provided with function signatures within <tools></tools> XML tags:\n"
            f"<tools>\n{signatures}\n</tools>\n\n"
            "In each turn, first think inside <think></think> tags. Then either call one "
            "function by returning a JSON object with the function name and arguments within "
            "<tool_call></tool_call> XML tags:\n"
            "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
            "</tool_call>\n"
            "or give your final answer within <answer></answer> tags. A function's output "
            "comes back within <tool_response></tool_response> tags.\n\n"
            "Example of a function call:\n"
            "<think>\nI need to look this up.\n</think>\n"
            f"{example}\n\n"
            "Example of a final answer:\n"
            "<think>\nThe response names the answer.\n</think>\n"
            "<answer>\nthe short answer\n</answer>\n\n"
            "Answer with the shortest phrase that answers the question."
        )


# The type other modules name: every format is a TagParser (name, stop, system_prompt, parse,
# format_tool_result, extract_tool_result, final_answer, format_reward, xml_count_reward).
Parser = TagParser

_PARSERS = {"xml": XMLParser, "qwen": QwenParser}


def get_parser(name: str) -> Parser:
    """The parser of a ``tool_format`` value: ``xml`` or ``qwen``."""
    try:
        return _PARSERS[name]()
    except KeyError:
        raise ValueError(f"unknown tool format {name!r} (allowed: "
                         f"{', '.join(PARSER_NAMES)})") from None
