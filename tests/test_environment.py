"""ToolEnvironment, turn by turn, against a scripted sampler (no model).

The scripted sampler maps (question, turn number) to a reply, returns the reply's token ids
like a real sampler (cut to the per-prompt budget) and records every call, so each test checks
the exact token ids the environment sends and keeps.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import pytest

from mtgrpo.contract.config import TrainerConfig
from mtgrpo.rollout.client import Sample
from mtgrpo.testing.tiny import build_tokenizer
from mtgrpo.trainer.environment import EnvironmentFrame, TemplateError, ToolEnvironment
from mtgrpo.trainer.parsers import get_parser
from mtgrpo.trainer.types import QARecord

CALL = ('<reasoning>look it up</reasoning>\n'
        '<tool>{"name": "wiki_search", "args": {"query": "%s"}}</tool>')
ANSWER = "<reasoning>found it</reasoning>\n<answer>%s</answer>"


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


class FakeSearch:
    name = "wiki_search"
    description = "Search a tiny fake corpus."
    parameters = {"type": "object", "properties": {"query": {"type": "string"}},
                  "required": ["query"], "additionalProperties": False}

    def __init__(self, barrier: threading.Barrier | None = None):
        self.barrier = barrier
        self.queries: list[str] = []

    def __call__(self, query: str) -> str:
        self.queries.append(query)
        if self.barrier is not None:
            self.barrier.wait(timeout=10)  # breaks (an error result) unless calls run together
        if query == "boom":
            raise RuntimeError("index exploded")
        return f"Paris is the capital of {query}."


@dataclass
class Call:
    prompts: list[list[int]]
    max_tokens: list[int]
    stop: list[str]
    seed: int | None


class ScriptedSampler:
    """Replies by (question, turn): ``script[question][turn]`` is a text or (text, add_eos)."""

    def __init__(self, tok, script):
        self.tok = tok
        self.script = script
        self.calls: list[Call] = []

    async def generate(self, prompts, *, max_tokens, temperature, top_p, stop, seed=None):
        budgets = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(prompts)
        self.calls.append(Call([list(p) for p in prompts], list(budgets), list(stop), seed))
        out = []
        for prompt, budget in zip(prompts, budgets):
            text = self.tok.decode(prompt)
            question = next(q for q in self.script if q in text)
            turn = text.count("<|im_start|>assistant") - 1
            reply = self.script[question][turn]
            reply, eos = reply if isinstance(reply, tuple) else (reply, False)
            ids = self.tok.encode(reply, add_special_tokens=False)
            if eos:
                ids.append(self.tok.eos_token_id)
            finish = "stop"
            if len(ids) > budget:
                ids, finish = ids[:budget], "length"
            out.append(Sample(ids, [-0.25] * len(ids),
                              self.tok.decode(ids, skip_special_tokens=True), finish))
        return out

    def close(self):
        pass


def make_env(tok, tools=None, **overrides):
    kwargs = dict(max_turns=3, max_tool_calls=2, max_tokens_per_turn=64,
                  max_completion_length=512, max_prompt_length=1024, temperature=0.9, top_p=1.0)
    kwargs.update(overrides)
    return ToolEnvironment(tok, get_parser("xml"), tools or {"wiki_search": FakeSearch()},
                           **kwargs)


def record(question: str, i: int = 0) -> QARecord:
    return QARecord(id=f"q{i}", question=question, aliases=("Paris",))


def test_two_turn_episode_keeps_exact_token_ids(tok):
    env = make_env(tok)
    script = {"Capital of France?": [CALL % "France", ANSWER % "Paris"]}
    sampler = ScriptedSampler(tok, script)
    [ep] = env.rollout_sync([record("Capital of France?")], 1, sampler)

    system = env.system_prompt
    prompt_text = tok.apply_chat_template(
        [{"role": "system", "content": system}, {"role": "user", "content": "Capital of France?"}],
        tokenize=False, add_generation_prompt=True)
    assert ep.prompt_ids == tok.encode(prompt_text, add_special_tokens=False)
    assert [t.role for t in ep.turns] == ["assistant", "tool", "assistant"]
    call_ids = tok.encode(CALL % "France", add_special_tokens=False)
    answer_ids = tok.encode(ANSWER % "Paris", add_special_tokens=False)
    env_text = ("<|im_end|>\n<|im_start|>user\n<result>\nParis is the capital of France.\n"
                "</result><|im_end|>\n<|im_start|>assistant\n")
    assert ep.turns[0].token_ids == call_ids
    assert ep.turns[1].text == env_text
    assert ep.turns[1].token_ids == tok.encode(env_text, add_special_tokens=False)
    assert ep.turns[1].tool_ok is True
    assert ep.turns[2].token_ids == answer_ids
    assert ep.turns[0].logprobs == [-0.25] * len(call_ids)
    assert ep.turns[1].logprobs is None
    # The second turn's prompt is the first prompt plus both earlier turns, id for id.
    assert sampler.calls[1].prompts == [ep.prompt_ids + call_ids + ep.turns[1].token_ids]
    assert sampler.calls[0].stop == ["</tool>", "</answer>"]
    # The whole sequence is the chat template's own rendering of the conversation.
    conversation = tok.apply_chat_template(
        [{"role": "system", "content": system}, {"role": "user", "content": "Capital of France?"},
         {"role": "assistant", "content": CALL % "France"},
         {"role": "user", "content": "<result>\nParis is the capital of France.\n</result>"},
         {"role": "assistant", "content": ANSWER % "Paris"}], tokenize=False)
    assert conversation.startswith(tok.decode(ep.prompt_ids + ep.completion_ids))
    assert ep.answer == "Paris" and ep.truncated is False
    assert ep.env_mask == [1] * len(call_ids) + [0] * len(ep.turns[1].token_ids) \
        + [1] * len(answer_ids)
    assert ep.first_tool_result_index == len(call_ids)
    assert env.last_stats.turns == 2 and env.last_stats.tool_calls == 1


def test_eos_ending_turn_is_not_closed_twice(tok):
    env = make_env(tok)
    script = {"Q?": [(CALL % "France", True), ANSWER % "Paris"]}
    [ep] = env.rollout_sync([record("Q?")], 1, ScriptedSampler(tok, script))
    assert ep.turns[0].token_ids[-1] == tok.eos_token_id
    assert ep.turns[1].text.startswith("\n<|im_start|>user\n<result>")
    assert tok.decode(ep.completion_ids).count("<|im_end|>") == 2  # assistant and tool message


def test_groups_order_and_one_sampler_call_per_turn(tok):
    env = make_env(tok)
    script = {"first?": [CALL % "A", ANSWER % "a"], "second?": [ANSWER % "b"],
              "third?": [CALL % "C", CALL % "D", ANSWER % "c"]}
    sampler = ScriptedSampler(tok, script)
    records = [record(q, i) for i, q in enumerate(script)]
    episodes = env.rollout_sync(records, 3, sampler, seed=7)
    assert [e.group for e in episodes] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [e.record.question for e in episodes[::3]] == list(script)
    assert [e.answer for e in episodes] == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    # Every still-active episode goes to the sampler together: 9, then 6, then 3 prompts.
    assert [len(c.prompts) for c in sampler.calls] == [9, 6, 3]
    assert [c.seed for c in sampler.calls] == [7, 7 + 1_000_003, 7 + 2_000_006]
    assert [e.tool_calls for e in episodes] == [1] * 3 + [0] * 3 + [2] * 3


def test_tool_errors_become_result_text(tok):
    env = make_env(tok)
    script = {"Q?": [CALL % "boom", '<tool>{"name": "wiki_search", "args": [1]}</tool>',
                     ANSWER % "x"]}
    [ep] = env.rollout_sync([record("Q?")], 1, ScriptedSampler(tok, script))
    tools = [t for t in ep.turns if t.role == "tool"]
    assert [t.tool_ok for t in tools] == [False, False]
    assert "Error: wiki_search failed: RuntimeError: index exploded" in tools[0].text
    assert "Error:" in tools[1].text and "args" in tools[1].text
    assert ep.answer == "x" and ep.tool_successes == 0


def test_unknown_tool_is_an_error_result(tok):
    env = make_env(tok)
    script = {"Q?": ['<tool>{"name": "calculator", "args": {}}</tool>', ANSWER % "x"]}
    [ep] = env.rollout_sync([record("Q?")], 1, ScriptedSampler(tok, script))
    assert "Error: unknown tool 'calculator'" in ep.turns[1].text
    assert ep.turns[1].tool_ok is False


def test_tool_calls_of_one_turn_run_concurrently(tok):
    barrier = threading.Barrier(4)  # four calls must be inside the tool at the same time
    env = make_env(tok, tools={"wiki_search": FakeSearch(barrier)}, tool_workers=4)
    script = {"Q?": [CALL % "France", ANSWER % "Paris"]}
    episodes = env.rollout_sync([record("Q?")], 4, ScriptedSampler(tok, script))
    assert all(e.turns[1].tool_ok for e in episodes), episodes[0].turns[1].text


def test_more_calls_than_workers_each_get_their_own_result(tok):
    tool = FakeSearch()
    env = make_env(tok, tools={"wiki_search": tool}, tool_workers=2)
    names = ["France", "Peru", "Chad", "Fiji", "Oman", "Mali", "Laos"]
    script = {f"Q{i}?": [CALL % n, ANSWER % n] for i, n in enumerate(names)}
    episodes = env.rollout_sync([record(q) for q in script], 1, ScriptedSampler(tok, script))
    assert sorted(tool.queries) == sorted(names)
    for name, ep in zip(names, episodes):
        assert ep.turns[1].tool_ok and name in ep.turns[1].text, (name, ep.turns[1].text)


class ThreadRecorder(FakeSearch):
    """Records which threads ran calls and how many ran at once; each call takes ``delay``."""

    def __init__(self, delay: float = 0.0, barrier: threading.Barrier | None = None):
        super().__init__(barrier)
        self.delay = delay
        self.threads: set[threading.Thread] = set()
        self.running = self.most = 0
        self.lock = threading.Lock()

    def __call__(self, query: str) -> str:
        with self.lock:
            self.threads.add(threading.current_thread())
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.delay)
            return super().__call__(query)
        finally:
            with self.lock:
                self.running -= 1


def test_slow_calls_fan_out_to_at_most_tool_workers_threads(tok):
    tool = ThreadRecorder(delay=0.05)
    env = make_env(tok, tools={"wiki_search": tool}, tool_workers=3)
    script = {"Q?": [CALL % "France", ANSWER % "Paris"]}
    episodes = env.rollout_sync([record("Q?")], 9, ScriptedSampler(tok, script))
    env.close()
    assert all(e.turns[1].tool_ok for e in episodes)
    # three helpers; the loop thread runs no call (it keeps the time-out)
    assert tool.most == 3 and len(tool.threads) == 3
    assert threading.current_thread() not in tool.threads


def test_tool_helper_threads_are_reused_across_rollouts_and_stopped_by_close(tok):
    barrier = threading.Barrier(3)  # every rollout needs three threads inside the tool at once
    tool = ThreadRecorder(barrier=barrier)
    env = make_env(tok, tools={"wiki_search": tool}, tool_workers=3)
    script = {"Q?": [CALL % "France", ANSWER % "Paris"]}
    first = env.rollout_sync([record("Q?")], 3, ScriptedSampler(tok, script))
    helpers = {t for t in tool.threads if t is not threading.current_thread()}
    tool.threads.clear()
    second = env.rollout_sync([record("Q?")], 3, ScriptedSampler(tok, script))
    assert all(e.turns[1].tool_ok for e in first + second), second[0].turns[1].text
    assert len(helpers) == 3 and tool.threads == helpers
    env.close()
    assert not any(t.is_alive() for t in helpers)


def test_max_tool_calls_stops_without_executing(tok):
    tool = FakeSearch()
    env = make_env(tok, tools={"wiki_search": tool}, max_turns=4, max_tool_calls=1)
    script = {"Q?": [CALL % "one", CALL % "two", ANSWER % "late"]}
    [ep] = env.rollout_sync([record("Q?")], 1, ScriptedSampler(tok, script))
    assert [t.role for t in ep.turns] == ["assistant", "tool", "assistant"]
    assert tool.queries == ["one"] and ep.answer is None and ep.truncated is False


def test_max_turns_leaves_no_call_without_an_answer_turn(tok):
    tool = FakeSearch()
    env = make_env(tok, tools={"wiki_search": tool}, max_turns=2, max_tool_calls=5)
    script = {"Q?": [CALL % "one", CALL % "two", ANSWER % "late"]}
    [ep] = env.rollout_sync([record("Q?")], 1, ScriptedSampler(tok, script))
    assert [t.role for t in ep.turns] == ["assistant", "tool", "assistant"]
    assert tool.queries == ["one"] and ep.answer is None


def test_no_tool_call_and_no_answer_ends_the_episode(tok):
    env = make_env(tok)
    [ep] = env.rollout_sync([record("Q?")], 1, ScriptedSampler(tok, {"Q?": ["just chatting"]}))
    assert len(ep.turns) == 1 and ep.answer is None and ep.truncated is False


def test_completion_budget_caps_each_turn_and_truncates(tok):
    call_ids = tok.encode(CALL % "France", add_special_tokens=False)
    env_len = len(make_env(tok).environment_ids(
        "Paris is the capital of France.", call_ids)[1])
    budget = len(call_ids) + env_len + 5  # room for only 5 tokens of the answer
    env = make_env(tok, max_completion_length=budget, max_tokens_per_turn=len(call_ids) + 2)
    sampler = ScriptedSampler(tok, {"Q?": [CALL % "France", ANSWER % "Paris"]})
    [ep] = env.rollout_sync([record("Q?")], 1, sampler)
    assert sampler.calls[0].max_tokens == [len(call_ids) + 2]
    assert sampler.calls[1].max_tokens == [5]
    assert len(ep.completion_ids) == budget
    assert ep.truncated is True and ep.answer is None


def test_per_turn_length_limit_truncates(tok):
    env = make_env(tok, max_tokens_per_turn=4)
    [ep] = env.rollout_sync([record("Q?")], 1, ScriptedSampler(tok, {"Q?": [ANSWER % "Paris"]}))
    assert len(ep.turns[0].token_ids) == 4 and ep.truncated is True and ep.answer is None


def test_tool_result_that_overflows_the_budget_is_cut(tok):
    call_ids = tok.encode(CALL % "France", add_special_tokens=False)
    budget = len(call_ids) + 6
    env = make_env(tok, max_completion_length=budget, max_tokens_per_turn=len(call_ids))
    sampler = ScriptedSampler(tok, {"Q?": [CALL % "France", ANSWER % "Paris"]})
    [ep] = env.rollout_sync([record("Q?")], 1, sampler)
    assert [t.role for t in ep.turns] == ["assistant", "tool"]
    assert len(ep.turns[1].token_ids) == 6 and len(ep.completion_ids) == budget
    assert ep.truncated is True and len(sampler.calls) == 1


def test_long_prompt_is_left_truncated(tok):
    env = make_env(tok, max_prompt_length=10)
    sampler = ScriptedSampler(tok, {"Q?": [ANSWER % "x"]})
    [ep] = env.rollout_sync([record("Q?")], 1, sampler)
    full = tok.encode(env.prompt_text("Q?"), add_special_tokens=False)
    assert ep.prompt_ids == full[-10:]


def test_from_config_uses_the_trainer_config(tok):
    cfg = TrainerConfig(model_name_or_path="m", max_turns=4, max_tool_calls=3,
                        max_tokens_per_turn=32, max_completion_length=300, temperature=0.7,
                        tool_format="qwen")
    env = ToolEnvironment.from_config(cfg, tok, {"wiki_search": FakeSearch()})
    assert (env.max_turns, env.max_tool_calls, env.max_tokens_per_turn,
            env.max_completion_length, env.temperature) == (4, 3, 32, 300, 0.7)
    assert env.stop == ["</tool_call>", "</answer>"]
    assert "<tool_response>" in env.environment_ids("r", [1])[0]


def test_frame_comes_from_the_chat_template(tok):
    frame = EnvironmentFrame.from_tokenizer(tok)
    assert frame.before == "<|im_end|>\n<|im_start|>user\n"
    assert frame.after == "<|im_end|>\n<|im_start|>assistant\n"
    tool_frame = EnvironmentFrame.from_tokenizer(tok, tool_role="tool")
    assert tool_frame.before == "<|im_end|>\n<|im_start|>tool\n"


def test_template_without_tool_messages_is_rejected(tok):
    other = build_tokenizer()
    other.chat_template = ("{% for m in messages %}{% if m['role'] != 'tool' %}"
                           "{{ m['role'] }}: {{ m['content'] }}\n{% endif %}{% endfor %}")
    with pytest.raises(TemplateError, match="'tool'"):
        EnvironmentFrame.from_tokenizer(other, tool_role="tool")


def test_rollout_sync_works_inside_a_running_loop(tok):
    env = make_env(tok)
    sampler = ScriptedSampler(tok, {"Q?": [ANSWER % "x"]})

    async def inside():
        return env.rollout_sync([record("Q?")], 2, sampler)

    assert [e.answer for e in asyncio.run(inside())] == ["x", "x"]
