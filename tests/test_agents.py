"""The agent endpoint through the real ``openai`` client, on a scripted backend (no vLLM).

The backend is ``ScriptedSampler`` (the synthetic task's ideal policy: search, then answer from
the result), wrapped to keep every sample it returned, so an episode's recorded ids can be
compared with what the backend produced. The vLLM server and an agent framework drive the same
endpoint in tests/test_agents_vllm.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap

import pytest

from mtgrpo.agents.chat import ChatRenderer
from mtgrpo.agents.endpoint import AgentEndpoint
from mtgrpo.agents.loading import AgentSpec
from mtgrpo.agents.recorder import EpisodeRecorder
from mtgrpo.agents.runner import AgentRunner
from mtgrpo.agents.scoring import AgentScorer
from mtgrpo.trainer.types import QARecord

SEARCH = {"type": "function", "function": {
    "name": "wiki_search", "description": "Searches the corpus.",
    "parameters": {"type": "object", "required": ["query"],
                   "properties": {"query": {"type": "string"}}}}}
RECORD = QARecord(id="code-bravo", question="What is the code of bravo?", aliases=("seven",))


class KeepingSampler:
    """A sampler that keeps every prompt it was sent and every sample it returned."""

    def __init__(self, inner):
        self.inner = inner
        self.prompts: list[list[int]] = []
        self.samples: list = []
        self.calls = 0

    async def generate(self, prompts, **kwargs):
        self.calls += 1
        samples = await self.inner.generate(prompts, **kwargs)
        for prompt, sample in zip(prompts, samples):
            sample.logprobs = [-0.25] * len(sample.token_ids)
            self.prompts.append(list(prompt))
            self.samples.append(sample)
        return samples

    def close(self):
        pass


@pytest.fixture(scope="module")
def tokenizer():
    from mtgrpo.testing.tiny import build_tokenizer

    return build_tokenizer()


@pytest.fixture
def endpoint(tokenizer):
    from mtgrpo.testing.synthetic import ScriptedSampler, task_parser

    sampler = KeepingSampler(ScriptedSampler(tokenizer))
    with AgentEndpoint(sampler, ChatRenderer(tokenizer, task_parser()), temperature=1.0,
                       top_p=1.0, max_tokens_per_turn=40, max_completion_length=128,
                       max_prompt_length=512) as ep:
        yield ep


def search(query: str) -> str:
    return "The code of bravo is seven." if "bravo" in query else "The code of zulu is one."


async def openai_agent(base_url, record, make_client):
    """A plain openai-client tool loop: the agent runs the tool and sends the result back."""
    client = make_client()
    messages = [{"role": "user", "content": record.question}]
    for _ in range(3):
        reply = await client.chat.completions.create(model="policy", messages=messages,
                                                     tools=[SEARCH])
        message = reply.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            return message.content
        for call in message.tool_calls:
            args = json.loads(call.function.arguments)
            messages.append({"role": "tool", "tool_call_id": call.id,
                             "content": search(args["query"])})
    return None


def play(endpoint, agent, records=(RECORD,), generations=1, **kwargs):
    runner = AgentRunner(endpoint, AgentSpec("test", call=agent), **kwargs)
    return runner, runner.rollout_sync(list(records), generations)


def test_openai_client_episode_is_token_exact(endpoint, tokenizer):
    from mtgrpo.testing.synthetic import task_parser
    from mtgrpo.trainer.rewards import RewardWeights, builtin_rubric

    _, [episode] = play(endpoint, openai_agent)
    kept = endpoint.sampler
    assert not episode.failed and episode.breaks == 0 and episode.calls == 2
    assert [t.role for t in episode.turns] == ["assistant", "tool", "assistant"]
    # The recorded ids and log-probs are the backend's, call for call.
    sampled = [t for t in episode.turns if t.role == "assistant"]
    assert [t.token_ids for t in sampled] == [s.token_ids for s in kept.samples]
    assert [t.logprobs for t in sampled] == [s.logprobs for s in kept.samples]
    # The second prompt extends the first prompt + its sample: the context is the tool result.
    first, second = kept.prompts
    assert episode.prompt_ids == first
    assert second == first + sampled[0].token_ids + episode.turns[1].token_ids
    assert "<result>\nThe code of bravo is seven.\n</result>" in episode.turns[1].text
    assert episode.env_mask == [1] * len(sampled[0].token_ids) + [0] * len(
        episode.turns[1].token_ids) + [1] * len(sampled[1].token_ids)
    # The prompt is the environment's: the parser's system prompt, the question.
    assert tokenizer.decode(first).startswith("<|im_start|>system\nFind the code")
    assert episode.answer == "seven"
    scored = AgentScorer(builtin_rubric(RewardWeights()), task_parser())(episode)
    assert scored.calls[0] == pytest.approx(0.2 + 0.5)  # the search ran and found the answer
    assert scored.calls[1] is None  # the answer: no context after it, no turn reward
    assert scored.components["exact_match"] == 1.0


def test_tool_calls_follow_the_openai_schema(endpoint):
    import openai

    async def main():
        client = openai.AsyncOpenAI(base_url=endpoint.base_url("e1"), api_key="x",
                                    max_retries=0)
        first = await client.chat.completions.create(
            model="any", messages=[{"role": "user", "content": RECORD.question}],
            tools=[SEARCH], extra_body={"return_token_ids": True})
        models = await client.models.list()
        with pytest.raises(openai.BadRequestError, match="streaming is not supported"):
            await client.chat.completions.create(model="any", stream=True, messages=[
                {"role": "user", "content": "hi"}])
        return first, models

    endpoint.open_episode(EpisodeRecorder("e1", RECORD, 0, str))
    first, models = asyncio.run(main())
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "wiki_search"
    assert json.loads(call.function.arguments) == {"query": "code of bravo"}
    assert choice.model_extra["token_ids"] == endpoint.sampler.samples[0].token_ids
    assert first.model_extra["prompt_token_ids"] == endpoint.sampler.prompts[0]
    assert [m.id for m in models.data] == ["mtgrpo-policy"]


def test_unknown_episode_and_bad_requests_are_one_line_errors(endpoint):
    import httpx

    url = endpoint.url
    r = httpx.post(f"{url}/episodes/nope/v1/chat/completions", json={"messages": []})
    assert r.status_code == 404 and "episode nope is not open" in r.json()["error"]["message"]
    endpoint.open_episode(EpisodeRecorder("e2", RECORD, 0, str))
    r = httpx.post(f"{url}/episodes/e2/v1/chat/completions",
                   json={"messages": [{"role": "user", "content": "x"}], "n": 2})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("n must be 1")
    r = httpx.post(f"{url}/episodes/e2/v1/chat/completions", content=b"{")
    assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]


def test_completions_with_token_ids_and_text(endpoint, tokenizer):
    import openai

    prompt = tokenizer.encode("<|im_start|>user\nWhat is the code of bravo?<|im_end|>\n"
                              "<|im_start|>assistant\n")
    recorder = EpisodeRecorder("e3", RECORD, 0, tokenizer.decode)
    endpoint.open_episode(recorder)

    async def main():
        client = openai.AsyncOpenAI(base_url=endpoint.base_url("e3"), api_key="x",
                                    max_retries=0)
        a = await client.completions.create(model="m", prompt=prompt, max_tokens=30)
        # The agent extends the ids it was given with a tool result of its own.
        result = tokenizer.encode("\n<result>The code of bravo is seven.</result>\n")
        ids = prompt + endpoint.sampler.samples[-1].token_ids + result
        b = await client.completions.create(model="m", prompt=ids, max_tokens=30)
        return a, b

    a, b = asyncio.run(main())
    assert "<tool>" in a.choices[0].text and "<answer> seven </answer>" in b.choices[0].text
    assert recorder.breaks == 0 and len(recorder.sequences) == 1
    assert [t.role for t in recorder.sequences[0].turns] == ["assistant", "tool", "assistant"]


def test_rewritten_history_is_split_and_counted(endpoint):
    async def forgetful(base_url, record, make_client):
        """Keeps only the last tool result, rewritten as a user message: the second prompt
        does not extend the first."""
        client = make_client()
        first = await client.chat.completions.create(
            model="m", tools=[SEARCH], messages=[{"role": "user", "content": record.question}])
        args = json.loads(first.choices[0].message.tool_calls[0].function.arguments)
        second = await client.chat.completions.create(model="m", messages=[
            {"role": "user", "content": record.question},
            {"role": "user", "content": "<result>\n" + search(args["query"]) + "\n</result>"}])
        return second.choices[0].message.content

    runner, [episode] = play(endpoint, forgetful)
    assert episode.breaks == 1 and runner.last_stats.breaks == 1
    assert len(episode.earlier) == 1 and episode.dropped_tokens == len(
        endpoint.sampler.samples[0].token_ids)
    # The trained sequence is the last one: its prompt is the second call's, exactly.
    assert episode.prompt_ids == endpoint.sampler.prompts[1]
    assert [t.role for t in episode.turns] == ["assistant"]
    assert episode.answer == "seven" and not episode.failed


def test_raising_and_hanging_agents_cost_one_episode_each(endpoint):
    async def flaky(base_url, record, make_client):
        if record.id == "raises":
            await make_client().chat.completions.create(
                model="m", messages=[{"role": "user", "content": record.question}])
            raise RuntimeError("the agent broke")
        if record.id == "hangs":
            await asyncio.sleep(60)
        return await openai_agent(base_url, record, make_client)

    records = [RECORD, QARecord("raises", RECORD.question, ("seven",)),
               QARecord("hangs", RECORD.question, ("seven",))]
    runner, episodes = play(endpoint, flaky, records, timeout_s=2.0)
    ok, raised, hung = episodes
    assert not ok.failed and ok.answer == "seven"
    assert raised.error == "raised RuntimeError: the agent broke" and raised.calls == 1
    assert hung.error.startswith("timed out after 2s") and hung.calls == 0 and not hung.turns
    assert hung.prompt_ids  # a row with the question and nothing to train
    assert runner.last_stats.failed == 2 and runner.last_stats.timed_out == 1


def test_sync_agents_and_bad_results(endpoint):
    def sync_agent(base_url, record, make_client):
        reply = make_client(sync=True).chat.completions.create(
            model="m", messages=[{"role": "user", "content": record.question}])
        return 0.75 if reply.choices[0].message.tool_calls else 0.25

    def wrong(base_url, record, make_client):
        return {"reward": 1}

    _, [a] = play(endpoint, sync_agent)
    _, [b] = play(endpoint, wrong)
    assert a.agent_reward == 0.75 and not a.failed and a.calls == 1
    assert b.failed and "returned a dict" in b.error


def test_command_agent_reads_the_environment_and_prints_the_reward(endpoint, tmp_path):
    script = tmp_path / "agent.py"
    script.write_text(textwrap.dedent("""
        import json, os, openai
        record = json.loads(os.environ["MTGRPO_RECORD"])
        client = openai.OpenAI(max_retries=0)  # OPENAI_BASE_URL, OPENAI_API_KEY from the env
        reply = client.chat.completions.create(model="m", messages=[
            {"role": "user", "content": record["question"]}])
        print("some log line")
        print(1.0 if reply.choices[0].message.tool_calls else 0.0)
    """))
    crash = tmp_path / "crash.py"
    crash.write_text("import sys; sys.stderr.write('no luck\\n'); sys.exit(3)\n")
    runner = AgentRunner(endpoint, AgentSpec("cmd", command=(sys.executable, str(script))))
    [episode] = runner.rollout_sync([RECORD])
    assert episode.agent_reward == 1.0 and episode.calls == 1 and not episode.failed
    runner = AgentRunner(endpoint, AgentSpec("cmd", command=(sys.executable, str(crash))))
    [episode] = runner.rollout_sync([RECORD])
    assert episode.error == "exited with status 3: no luck"


def test_concurrent_episodes_are_batched(endpoint):
    records = [QARecord(f"r{i}", RECORD.question, ("seven",)) for i in range(8)]
    _, episodes = play(endpoint, openai_agent, records, generations=2)
    assert [e.group for e in episodes] == [i // 2 for i in range(16)]
    assert all(e.answer == "seven" and e.breaks == 0 for e in episodes)
    # 32 calls went to the backend in far fewer generate calls (requests arriving together).
    assert len(endpoint.sampler.samples) == 32 and endpoint.sampler.calls < 32


def test_budget_refusal_marks_the_episode_truncated(tokenizer):
    from mtgrpo.testing.synthetic import ScriptedSampler, task_parser

    sampler = KeepingSampler(ScriptedSampler(tokenizer))
    with AgentEndpoint(sampler, ChatRenderer(tokenizer, task_parser()), temperature=1.0,
                       top_p=1.0, max_tokens_per_turn=16, max_completion_length=16,
                       max_prompt_length=512) as ep:
        _, [episode] = play(ep, openai_agent)
    assert episode.truncated and episode.failed and "max_completion_length" in episode.error


def test_recorder_stitches_and_splits():
    rec = EpisodeRecorder("e", RECORD, 3, lambda ids: " ".join(map(str, ids)))
    assert rec.add([1, 2], [3, 4], [-1.0, -2.0], "a", "stop") is False
    assert rec.add([1, 2, 3, 4, 9, 9], [5], [-0.5], "b", "stop", tool_results=["ok"]) is True
    assert rec.add([1, 2, 3, 7], [8], None, "c", "length") is False  # history rewritten
    ep = rec.episode(answer="x")
    assert (ep.breaks, ep.calls, ep.truncated, ep.group) == (1, 3, True, 3)
    assert ep.prompt_ids == [1, 2, 3, 7] and [t.token_ids for t in ep.turns] == [[8]]
    [earlier] = ep.earlier
    assert [(t.role, t.token_ids, t.tool_ok) for t in earlier.turns] == [
        ("assistant", [3, 4], None), ("tool", [9, 9], True), ("assistant", [5], None)]
    assert ep.dropped_tokens == 3


def test_retrieval_agent_plays_the_built_in_loops_episode(tokenizer, tmp_path):
    """The shipped retrieval agent, on the scripted ideal policy, records the very tokens the
    built-in loop's episode has: same prompt, same turns, same environment tokens."""
    from mtgrpo.contract import TrainerConfig
    from mtgrpo.examples.retrieval_agent import RetrievalAgent
    from mtgrpo.task.api import TaskContext
    from mtgrpo.testing.synthetic import ScriptedSampler, task_parser, write_task
    from mtgrpo.trainer.data import load_records
    from mtgrpo.trainer.environment import ToolEnvironment
    from mtgrpo.trainer.paths import RunPaths

    task = write_task(tmp_path / "task")
    cfg = TrainerConfig(model_name_or_path="m", max_turns=2, max_tool_calls=1,
                        max_tokens_per_turn=40, max_completion_length=128,
                        search_max_tokens=32, search_top_k=1)
    paths = RunPaths("m", task / "train.jsonl", None, task / "corpus", tmp_path, tmp_path,
                     tmp_path)
    agent = RetrievalAgent(TaskContext(cfg, paths, tokenizer))
    records = load_records(task / "train.jsonl")[:4]
    env = ToolEnvironment.from_config(cfg, tokenizer, {"wiki_search": agent.search},
                                      parser=task_parser())
    expected = env.rollout_sync(records, 1, ScriptedSampler(tokenizer))
    sampler = KeepingSampler(ScriptedSampler(tokenizer))
    with AgentEndpoint(sampler, ChatRenderer(tokenizer, task_parser()), temperature=1.0,
                       top_p=1.0, max_tokens_per_turn=40, max_completion_length=128,
                       max_prompt_length=512) as ep:
        episodes = AgentRunner(ep, AgentSpec("retrieval", call=agent)).rollout_sync(records)
    for got, want in zip(episodes, expected):
        assert got.prompt_ids == want.prompt_ids
        assert [(t.role, t.token_ids) for t in got.turns] == [
            (t.role, t.token_ids) for t in want.turns]
        assert got.answer == want.answer and got.env_mask == want.env_mask


async def agents_sdk_agent(base_url, record, make_client):
    """An OpenAI Agents SDK agent, unchanged but for its client: a function tool, the SDK's
    own run loop (it executes the tool and sends the result back)."""
    from agents import (Agent, OpenAIChatCompletionsModel, Runner, function_tool,
                        set_tracing_disabled)

    set_tracing_disabled(True)  # offline: no trace export

    @function_tool
    def wiki_search(query: str) -> str:
        """Searches the corpus."""
        return search(query)

    agent = Agent(name="retrieval", instructions="Answer with the code.", tools=[wiki_search],
                  model=OpenAIChatCompletionsModel(model="policy", openai_client=make_client()))
    result = await Runner.run(agent, record.question, max_turns=4)
    return result.final_output


def test_openai_agents_sdk_runs_unchanged(endpoint):
    _, [episode] = play(endpoint, agents_sdk_agent)
    assert not episode.failed, episode.error
    assert episode.calls == 2 and episode.breaks == 0
    assert [t.role for t in episode.turns] == ["assistant", "tool", "assistant"]
    assert "The code of bravo is seven." in episode.turns[1].text
    assert episode.turns[1].tool_ok is True and episode.answer == "seven"
    sampled = [t.token_ids for t in episode.turns if t.role == "assistant"]
    assert sampled == [s.token_ids for s in endpoint.sampler.samples]


def test_agent_keys_are_checked_before_anything_starts():
    from mtgrpo.contract import TrainerConfig
    from mtgrpo.errors import UserError
    from mtgrpo.task.loading import check_task

    with pytest.raises(UserError) as err:
        TrainerConfig(model_name_or_path="m", agent="not a path", agent_command="node a.js",
                      max_staleness=1)
    assert [p.key for p in err.value.problems] == ["agent_command", "agent", "max_staleness"]
    for agent, message in [("nosuchmodule_xyz:agent", "cannot be imported"),
                           ("json:nothing", "has no attribute 'nothing'"),
                           ("json:__doc__", "not callable")]:
        cfg = TrainerConfig(model_name_or_path="m", agent=agent, task_tools="")
        with pytest.raises(UserError, match=message) as err:
            check_task(cfg, source="recipe.yaml")
        assert str(err.value).startswith("recipe.yaml: agent: ")
    check_task(TrainerConfig(model_name_or_path="m", task_tools="",
                             agent="mtgrpo.examples.retrieval_agent:RetrievalAgent"))
    from mtgrpo.contract.config import resolved_staleness

    assert resolved_staleness(TrainerConfig(model_name_or_path="m")) == 1  # vllm: overlapped
    assert resolved_staleness(TrainerConfig(model_name_or_path="m", agent="a:b")) == 0


def test_a_failing_backend_stops_the_rollout(tokenizer):
    from mtgrpo.rollout.client import SamplerError
    from mtgrpo.testing.synthetic import task_parser

    class DeadServer:
        base_url = "http://127.0.0.1:9"

        async def generate(self, prompts, **kwargs):
            raise SamplerError("vLLM server at http://127.0.0.1:9 is unreachable")

    with AgentEndpoint(DeadServer(), ChatRenderer(tokenizer, task_parser()), temperature=1.0,
                       top_p=1.0, max_tokens_per_turn=16, max_completion_length=64,
                       max_prompt_length=512) as ep:
        runner = AgentRunner(ep, AgentSpec("a", call=openai_agent))
        with pytest.raises(SamplerError, match="unreachable"):
            runner.rollout_sync([RECORD])
        assert ep.backend_error is None  # reported once


def test_local_agent_recipe_and_job_hyperparameters():
    from pathlib import Path

    from mtgrpo.commands.train import load_config
    from mtgrpo.contract import TrainerConfig
    from mtgrpo.task.loading import check_task

    cfg = load_config(Path(__file__).resolve().parent.parent / "recipes" / "local"
                      / "agent-cpu.yaml")
    assert cfg.agent == "mtgrpo.examples.retrieval_agent:RetrievalAgent"
    check_task(cfg)
    # A job gets the agent keys as SageMaker hyperparameters (strings) and reads them back.
    back = TrainerConfig.from_hyperparameters(cfg.to_hyperparameters())
    assert (back.agent, back.agent_concurrency, back.agent_timeout_s) == (
        cfg.agent, 64, 120.0)


def test_a_template_that_refuses_is_a_bad_request_not_a_backend_failure():
    import copy

    import httpx

    from mtgrpo.testing.synthetic import ScriptedSampler, task_parser
    from mtgrpo.testing.tiny import build_tokenizer

    tok = build_tokenizer()
    strict = copy.copy(tok)
    strict.chat_template = "{{ raise_exception('system messages are not supported') }}"
    sampler = KeepingSampler(ScriptedSampler(tok))
    with AgentEndpoint(sampler, ChatRenderer(strict, task_parser()), temperature=1.0, top_p=1.0,
                       max_tokens_per_turn=16, max_completion_length=64,
                       max_prompt_length=512) as ep:
        ep.open_episode(EpisodeRecorder("t", RECORD, 0, str))
        r = httpx.post(ep.base_url("t") + "/chat/completions",
                       json={"messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 400 and r.json()["error"]["message"] == (
            "the chat template cannot render these messages: system messages are not supported")
        assert ep.backend_error is None and not sampler.samples


def test_messages_are_reduced_and_rendered_in_the_models_format(tokenizer):
    from mtgrpo.agents.chat import Message, RequestError, messages_of
    from mtgrpo.testing.synthetic import task_parser

    msgs = messages_of([
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": "Q?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "wiki_search", "arguments": '{"query": "x"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "R."}])
    assert [m.role for m in msgs] == ["system", "user", "assistant", "tool"]
    assert msgs[2].tool_calls == (("wiki_search", '{"query": "x"}'),)
    assert msgs[2].same_reply(Message("assistant", "other text", msgs[2].tool_calls))
    renderer = ChatRenderer(tokenizer, task_parser())
    text = tokenizer.decode(renderer.render(msgs, []))
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n"
                    '<|im_start|>assistant\n<tool>\n{"name": "wiki_search", "args": {"query": '
                    '"x"}}\n</tool><|im_end|>\n<|im_start|>user\n<result>\nR.\n</result>'
                    "<|im_end|>\n<|im_start|>assistant\n")
    for bad, message in [([{"role": "function", "content": "x"}], "role 'function'"),
                         ([{"role": "user", "content": [{"type": "image_url"}]}], "only text"),
                         ([], "non-empty list")]:
        with pytest.raises(RequestError, match=message):
            messages_of(bad)


def test_only_calls_followed_by_a_tool_result_earn_turn_rewards(tokenizer):
    from mtgrpo.testing.synthetic import task_parser
    from mtgrpo.trainer.rewards import RewardWeights, builtin_rubric

    rec = EpisodeRecorder("e", RECORD, 0, tokenizer.decode)
    call = tokenizer.encode("<tool> x </tool>")
    user = tokenizer.encode("<|im_start|>user\nThe code of bravo is seven.<|im_end|>\n")
    result = tokenizer.encode("<|im_start|>user\n<result>\nThe code of bravo is seven.\n"
                              "</result><|im_end|>\n")
    rec.add([1], call, None, "<tool> x </tool>", "stop")
    rec.add([1] + call + user, call, None, "<tool> x </tool>", "stop")  # a user message
    rec.add([1] + call + user + call + result, call, None, "<answer> seven </answer>", "stop",
            tool_results=["The code of bravo is seven."], tool_name="wiki_search")
    ep = rec.episode(answer="seven")
    scored = AgentScorer(builtin_rubric(RewardWeights()), task_parser())(ep)
    # The first call was answered by a user message (no tool: no turn reward, even though the
    # message holds the answer); the second by a tool result; the third is the answer.
    assert scored.calls == (None, pytest.approx(0.7), None)
    assert ep.tool_counts()["tool_failures"] == 0
    assert [t.tool_name for t in ep.turns if t.role == "tool"] == ["", "wiki_search"]
