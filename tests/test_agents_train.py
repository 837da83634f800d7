"""An agent trains through ``train.run`` on CPU: the transformers sampler on the live policy
behind the endpoint, per-call advantages, the agent metrics; a broken agent fails its
episodes, not the run. (The vLLM server and the learning curve: tests/test_agents_vllm.py and
tests/test_learning.py.)"""

from __future__ import annotations

import json

import pytest

from mtgrpo.contract import TrainerConfig
from mtgrpo.trainer.paths import RunPaths

pytestmark = pytest.mark.slow


async def broken_agent(base_url, record, make_client):
    """Makes one call, then raises: every episode fails after recording a call."""
    await make_client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": record.question}])
    raise RuntimeError("broken on purpose")


@pytest.mark.parametrize("agent, algorithm", [
    ("mtgrpo.examples.retrieval_agent:RetrievalAgent", "mt_grpo"),
    ("test_agents_train:broken_agent", "grpo_mr")], ids=["retrieval", "broken"])
def test_agent_trains_with_the_transformers_sampler(tiny_model_dir, tmp_path, agent, algorithm):
    from mtgrpo.testing.synthetic import task_parser, write_task
    from mtgrpo.trainer.train import run

    task = write_task(tmp_path / "task")
    out = tmp_path / "out"
    config = TrainerConfig(
        model_name_or_path=str(tiny_model_dir), generation_backend="transformers",
        agent=agent, agent_timeout_s=120, algorithm=algorithm, num_generations=4,
        per_device_train_batch_size=8, max_steps=2, eval_steps=0, save_steps=100,
        max_turns=2, max_tool_calls=1, max_tokens_per_turn=16, max_completion_length=64,
        search_max_tokens=16, learning_rate=1e-3, seed=0)
    paths = RunPaths(str(tiny_model_dir), task / "train.jsonl", task / "eval.jsonl",
                     task / "corpus", out, out / "model", out / "checkpoints")
    summary = run(config, paths, parser=task_parser())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "agent_calls_per_episode" in r]
    assert summary["global_step"] == 2 and [r["step"] for r in train] == [1, 2]
    for r in train:
        assert r["agent_calls_per_episode"] >= 1.0 and r["agent_sequence_breaks"] == 0
        assert r["agent_failed_share"] == (1.0 if agent.endswith("broken_agent") else 0.0)
    assert (out / "model" / "model.safetensors").is_file()
