"""Agents against the real vLLM CPU server (the session's, tiny model): the ``openai`` client
and the OpenAI Agents SDK drive episodes through the endpoint; the recorded ids and log-probs
are the ones the server sampled, call after call.
"""

from __future__ import annotations

import asyncio

import pytest

from mtgrpo.agents.chat import ChatRenderer
from mtgrpo.agents.endpoint import AgentEndpoint
from mtgrpo.agents.loading import AgentSpec
from mtgrpo.agents.runner import AgentRunner
from mtgrpo.trainer.types import QARecord

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

RECORDS = [QARecord(f"r{i}", q, ("seven",)) for i, q in enumerate(
    ["What is the code of bravo?", "What is the code of delta?"])]


class ServerSamples:
    """The VLLMSampler, keeping each prompt sent and each sample the server returned."""

    def __init__(self, inner):
        self.inner = inner
        self.sent: list[list[int]] = []
        self.returned: list = []

    @property
    def base_url(self):
        return self.inner.base_url

    async def generate(self, prompts, **kwargs):
        samples = await self.inner.generate(prompts, **kwargs)
        self.sent += [list(p) for p in prompts]
        self.returned += [(list(s.token_ids), list(s.logprobs)) for s in samples]
        return samples

    def close(self):
        pass


@pytest.fixture
def endpoint(vllm_server):
    from transformers import AutoTokenizer

    from mtgrpo.rollout.sampler import VLLMSampler
    from mtgrpo.testing.synthetic import task_parser

    # Whatever weights the server holds (other tests push theirs): nothing here depends on them.
    tokenizer = AutoTokenizer.from_pretrained(vllm_server.model_dir)
    sampler = ServerSamples(VLLMSampler(vllm_server.url, logprobs=True))
    with AgentEndpoint(sampler, ChatRenderer(tokenizer, task_parser()), temperature=1.0,
                       top_p=1.0, max_tokens_per_turn=24, max_completion_length=160,
                       max_prompt_length=512) as ep:
        yield ep


async def chatty_agent(base_url, record, make_client):
    """A plain openai-client loop of three calls: each reply is kept and a user turn added."""
    client = make_client()
    messages = [{"role": "user", "content": record.question}]
    for _ in range(3):
        reply = await client.chat.completions.create(model="policy", messages=messages,
                                                     max_tokens=24)
        message = reply.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        messages.append({"role": "user", "content": "Go on."})
    return message.content


def test_openai_client_episodes_hold_the_servers_samples(endpoint, vllm_server):
    from mtgrpo.rollout.client import VLLMClient

    runner = AgentRunner(endpoint, AgentSpec("chatty", call=chatty_agent))
    episodes = runner.rollout_sync(RECORDS, 2)
    kept = endpoint.sampler
    assert len(kept.returned) == 12 and all(not e.failed for e in episodes)
    by_prompt: dict[tuple, list] = {}  # a group's first prompts are identical: several samples
    for p, r in zip(kept.sent, kept.returned):
        by_prompt.setdefault(tuple(p), []).append(r)
    for ep in episodes:
        assert ep.breaks == 0 and ep.calls == 3
        assert [t.role for t in ep.turns] == ["assistant", "tool"] * 2 + ["assistant"]
        # Each call's prompt is the history so far, and its turn is what the server returned.
        history = list(ep.prompt_ids)
        for turn in ep.turns:
            if turn.role == "assistant":
                assert (turn.token_ids, turn.logprobs) in by_prompt[tuple(history)]
            history += turn.token_ids
    # The server's own scoring of a whole episode agrees with the recorded log-probs
    # (temperature 1: the sampled distribution is the model's).
    ep = episodes[0]
    ids = ep.prompt_ids + ep.completion_ids
    [scores] = asyncio.run(VLLMClient(vllm_server.url).score([ids]))
    recorded = [lp for t in ep.turns if t.role == "assistant" for lp in t.logprobs]
    offsets = [len(ep.prompt_ids) + i - 1 for i, m in enumerate(ep.env_mask) if m]
    gaps = [abs(scores[o] - lp) for o, lp in zip(offsets, recorded)]
    assert sum(gaps) / len(gaps) < 0.05, max(gaps)


def test_openai_agents_sdk_against_the_server(endpoint):
    from test_agents import agents_sdk_agent

    runner = AgentRunner(endpoint, AgentSpec("sdk", call=agents_sdk_agent))
    episodes = runner.rollout_sync(RECORDS, 1)
    kept = endpoint.sampler
    for ep in episodes:
        # The random tiny model writes no tool call: the SDK takes its first reply as final.
        assert ep.calls >= 1 and ep.breaks == 0, ep.error
        sampled = [t.token_ids for t in ep.turns if t.role == "assistant"]
        assert all(s in [r[0] for r in kept.returned] for s in sampled)
    assert runner.last_stats.failed == 0, runner.last_stats.errors
