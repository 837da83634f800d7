"""Parsers: well-formed and malformed tool calls, both formats, and the format rewards."""

from __future__ import annotations

import json

import pytest

from mtgrpo.trainer.parsers import get_parser
from mtgrpo.trainer.tools.wiki_search import WikiSearch
from mtgrpo.trainer.types import Episode, QARecord, ToolCall, Turn

FIXTURES = "tests/fixtures/corpus"
XML = get_parser("xml")
QWEN = get_parser("qwen")
CALL = '{"name": "wiki_search", "args": {"query": "Everest first ascent"}}'


def xml_call(body: str = CALL, reasoning: str = "I should search.") -> str:
    return f"<reasoning>\n{reasoning}\n</reasoning>\n<tool>\n{body}\n</tool>"


def episode(*assistant_texts: str) -> Episode:
    turns = []
    for i, text in enumerate(assistant_texts):
        if i:
            turns.append(Turn("tool", "<result>\nx\n</result>", [0], tool_ok=True))
        turns.append(Turn("assistant", text, [1]))
    return Episode(record=QARecord("r", "q", ("a",)), prompt_ids=[0], turns=turns)


# -- well-formed ------------------------------------------------------------------------------

def test_xml_tool_call():
    parsed = XML.parse(xml_call())
    assert parsed.reasoning == "I should search."
    assert parsed.tool_call == ToolCall("wiki_search", {"query": "Everest first ascent"})
    assert parsed.tool_error is None and parsed.answer is None


def test_xml_answer():
    parsed = XML.parse("<reasoning>\nIt says so.\n</reasoning>\n<answer>\n Edmund Hillary \n</answer>")
    assert parsed.answer == "Edmund Hillary"
    assert parsed.tool_call is None and parsed.tool_error is None


def test_qwen_tool_call_and_answer():
    text = ('<think>\nsearch\n</think>\n<tool_call>\n'
            '{"name": "wiki_search", "arguments": {"query": "Nile"}}\n</tool_call>')
    parsed = QWEN.parse(text)
    assert parsed.reasoning == "search"
    assert parsed.tool_call == ToolCall("wiki_search", {"query": "Nile"})
    assert QWEN.parse("<think>\nok\n</think>\n<answer>Mediterranean</answer>").answer == \
        "Mediterranean"


def test_stop_strings_and_result_wrapping():
    assert XML.stop == ["</tool>", "</answer>"]
    assert QWEN.stop == ["</tool_call>", "</answer>"]
    assert XML.format_tool_result("found") == "<result>\nfound\n</result>"
    assert QWEN.format_tool_result("found") == "<tool_response>\nfound\n</tool_response>"
    assert XML.extract_tool_result("<result>\nfound it\n</result>") == "found it"
    assert XML.extract_tool_result("Error: no call") == "Error: no call"


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="allowed: xml, qwen"):
        get_parser("json")


# -- malformed calls ----------------------------------------------------------------------------

@pytest.mark.parametrize("body, error", [
    ('{"name": "wiki_search", "args": {"query": "x"}', "invalid JSON in <tool>"),
    ("search for Everest", "invalid JSON in <tool>"),
    ('{"args": {"query": "x"}}', 'needs a "name" string'),
    ('{"name": "", "args": {"query": "x"}}', 'needs a "name" string'),
    ('{"name": 3, "args": {"query": "x"}}', 'needs a "name" string'),
    ('{"name": "wiki_search"}', 'needs "args"'),
    ('{"name": "wiki_search", "args": "Everest"}', '"args" must be a JSON object, got str'),
    ('{"name": "wiki_search", "args": ["Everest"]}', '"args" must be a JSON object, got list'),
    ('{"name": "wiki_search", "arguments": {"query": "x"}}', "unexpected keys arguments"),
    ('["wiki_search", {"query": "x"}]', "must be a JSON object"),
    ('"wiki_search"', "must be a JSON object"),
    ("", "empty <tool>"),
])
def test_xml_malformed_calls(body, error):
    parsed = XML.parse(xml_call(body))
    assert parsed.tool_call is None
    assert error in parsed.tool_error
    assert "\n" not in parsed.tool_error


def test_qwen_expects_arguments_key():
    parsed = QWEN.parse('<tool_call>\n{"name": "wiki_search", "args": {"query": "x"}}\n</tool_call>')
    assert parsed.tool_call is None
    assert "unexpected keys args" in parsed.tool_error and "arguments" in parsed.tool_error


def test_nested_tool_tags_are_an_error():
    parsed = XML.parse(f"<reasoning>r</reasoning><tool><tool>{CALL}</tool></tool>")
    assert parsed.tool_call is None and "invalid JSON" in parsed.tool_error


def test_unclosed_tool_tag():
    parsed = XML.parse(f"<reasoning>r</reasoning>\n<tool>\n{CALL}")
    assert parsed.tool_call is None
    assert parsed.tool_error == "<tool> is not closed with </tool>"


def test_unclosed_answer_tag():
    parsed = XML.parse("<reasoning>r</reasoning>\n<answer>\nHillary")
    assert parsed.answer is None
    assert parsed.tool_error == "<answer> is not closed with </answer>"


def test_closing_tag_without_opening():
    assert "without an opening <tool>" in XML.parse(f"{CALL}\n</tool>").tool_error


def test_two_calls_in_one_turn_take_the_first():
    # The sampler stops at the first </tool>; what follows was never part of the turn.
    second = '{"name": "wiki_search", "args": {"query": "Nile"}}'
    parsed = XML.parse(xml_call() + f"\n<tool>\n{second}\n</tool>")
    assert parsed.tool_call == ToolCall("wiki_search", {"query": "Everest first ascent"})


def test_answer_and_tool_in_one_turn_first_one_wins():
    answer_first = "<reasoning>r</reasoning><answer>Hillary</answer>\n<tool>\n" + CALL + "\n</tool>"
    parsed = XML.parse(answer_first)
    assert parsed.answer == "Hillary" and parsed.tool_call is None
    tool_first = xml_call() + "\n<answer>Hillary</answer>"
    parsed = XML.parse(tool_first)
    assert parsed.tool_call is not None and parsed.answer is None


def test_plain_text_turn_parses_to_nothing():
    parsed = XML.parse("I think the answer is Hillary.")
    assert parsed.tool_call is None and parsed.answer is None and parsed.tool_error is None


# -- system prompt -------------------------------------------------------------------------------

def test_system_prompt_describes_the_tool_with_a_parsable_example():
    with WikiSearch(FIXTURES) as tool:
        for parser in (XML, QWEN):
            prompt = parser.system_prompt([tool])
            assert "wiki_search" in prompt and "query" in prompt
            assert tool.description in prompt
            # the example call in the prompt is itself a well-formed call
            example = parser.example_call(tool)
            assert example in prompt
            assert parser.parse(example).tool_call == ToolCall("wiki_search",
                                                               tool.example_args)
    # the qwen prompt carries the JSON signature of the tool
    with WikiSearch(FIXTURES) as tool:
        line = next(l for l in QWEN.system_prompt([tool]).splitlines() if l.startswith("{"))
        assert json.loads(line)["function"]["parameters"] == tool.parameters


# -- format rewards (reference: verifiers v0.1 XMLParser) -----------------------------------------

PERFECT_TOOL = xml_call()
PERFECT_ANSWER = "<reasoning>\nIt says Hillary.\n</reasoning>\n<answer>\nEdmund Hillary\n</answer>"


def test_format_reward_perfect_episode_is_one():
    ep = episode(PERFECT_TOOL, PERFECT_ANSWER)
    assert XML.format_reward(ep) == pytest.approx(1.0)
    assert XML.xml_count_reward(ep) == pytest.approx(1.0)


def test_format_reward_components():
    # answer only, no reasoning: 0.4 * 1/2 + 0.2 (well formed) + 0 (start) + 0.2 (end) = 0.6
    assert XML.format_reward(episode("<answer>\nHillary\n</answer>")) == pytest.approx(0.6)
    # reasoning only, then text: 0.4 * 1/2 + 0.2 + 0.2 (start) + 0 (end) = 0.6
    assert XML.format_reward(episode("<reasoning>\nhm\n</reasoning> Hillary")) == \
        pytest.approx(0.6)
    # plain text: no field, no start, no end -> 0 (the reference gave 0.2 here)
    assert XML.format_reward(episode("Hillary")) == 0.0
    # unclosed answer: both sets present (broken tag counts), not well formed, starts right:
    # 0.4 * 2/2 + 0 + 0.2 + 0 = 0.6
    assert XML.format_reward(episode("<reasoning>\nr\n</reasoning>\n<answer>\nHil")) == \
        pytest.approx(0.6)
    # mean over turns: (1.0 + 0.0) / 2
    assert XML.format_reward(episode(PERFECT_TOOL, "Hillary")) == pytest.approx(0.5)
    assert XML.format_reward(Episode(record=QARecord("r", "q", ("a",)), prompt_ids=[0])) == 0.0


def test_xml_count_reward():
    # one turn, reasoning used once each (2 checks = 2), answer opened twice closed once:
    # (1 - |2-1|) + (1 - |1-1|) = 1 -> (2 + 1) / 4 = 0.75
    text = "<reasoning>r</reasoning><answer>a<answer>b</answer>"
    assert XML.xml_count_reward(episode(text)) == pytest.approx(0.75)
    # no tags at all: 0
    assert XML.xml_count_reward(episode("just text")) == 0.0
    # three unmatched openings: 1 - |3 - 1| = -1 and 1 - |0 - 1| = 0 -> -0.5, clamped to 0
    assert XML.xml_count_reward(episode("<answer><answer><answer>")) == 0.0
    # qwen tags count for the qwen parser only
    qwen_text = "<think>t</think><tool_call>{}</tool_call>"
    assert QWEN.xml_count_reward(episode(qwen_text)) == pytest.approx(1.0)
    assert XML.xml_count_reward(episode(qwen_text)) == 0.0


def test_final_answer_prefers_the_episode_then_the_last_answer():
    ep = episode(PERFECT_TOOL, PERFECT_ANSWER)
    assert XML.final_answer(ep) == "Edmund Hillary"
    ep.answer = "Tenzing"
    assert XML.final_answer(ep) == "Tenzing"
    assert XML.final_answer(episode(PERFECT_TOOL)) is None
