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


def test_per_call_advantages_reach_each_calls_tokens(tiny_model_dir, tmp_path):
    """MTGRPOTrainer with agent episodes (a scorer giving per-call turn rewards): each call's
    sampled tokens get that call's advantage, the context between calls 0 (and the loss mask),
    and the agent metrics are logged."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mtgrpo.agents.recorder import AgentEpisode
    from mtgrpo.agents.scoring import CallRewards
    from mtgrpo.trainer.advantages import call_advantages
    from mtgrpo.trainer.grpo_trainer import MTGRPOTrainer
    from mtgrpo.trainer.train import grpo_args
    from mtgrpo.trainer.types import QARecord, Turn

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    records = [QARecord("q0", "What is the code of bravo?", ("seven",))]
    # Per generation: the turn rewards of its calls (None: the answer) and the outcome.
    script = [([1.0, 0.0, None], 1.0), ([0.0, None], 0.0)]

    def episode(j):
        calls, _ = script[j]
        turns = []
        for k, reward in enumerate(calls):
            ids = tokenizer.encode(f"<tool> call {k} </tool>")
            turns.append(Turn("assistant", str(j), ids, [-0.5] * len(ids)))
            if reward is not None:
                turns.append(Turn("tool", "", tokenizer.encode("<result> x </result>"),
                                  tool_ok=True))
        return AgentEpisode(record=records[0], prompt_ids=tokenizer.encode("q"), turns=turns,
                            calls=len(calls), breaks=j, error="boom" if j else None)

    def scorer(ep):
        calls, outcome = script[int(ep.turns[0].text)]
        return CallRewards(turn=0.0, outcome=outcome, components={}, calls=tuple(calls))

    cfg = TrainerConfig(model_name_or_path=str(tiny_model_dir), num_generations=2,
                        per_device_train_batch_size=2, max_steps=1, eval_steps=0,
                        algorithm="mt_grpo", turn_advantage_coef=0.5)
    paths = RunPaths(str(tiny_model_dir), tmp_path / "t.jsonl", None, tmp_path, tmp_path / "o",
                     tmp_path / "m", tmp_path / "c")
    trainer = MTGRPOTrainer(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                            grpo_args(cfg, paths), processing_class=tokenizer, config=cfg,
                            train_records=records, scorer=scorer,
                            rollout=lambda recs: [episode(j) for j in range(len(recs))])
    trainer.model.train()
    batch = trainer._generate_and_score_completions([{"prompt": "0"}, {"prompt": "0"}])
    expected = call_advantages([1.0, 0.0], [c for c, _ in script], [0, 0],
                               algorithm="mt_grpo", turn_coef=0.5)
    assert expected[0][0] != expected[0][1] != expected[0][2]  # three different credits
    for row in range(2):
        ep = episode(row)
        got, offset, k = batch["advantages"][row].tolist(), 0, 0
        for turn in ep.turns:
            n = len(turn.token_ids)
            want = expected[row][k] if turn.role == "assistant" else 0.0
            assert got[offset:offset + n] == pytest.approx([want] * n, abs=1e-6)
            k += turn.role == "assistant"
            offset += n
    metrics = trainer._metrics["train"]
    assert metrics["agent_calls_per_episode"] == [2.5]
    assert metrics["agent_failed_share"] == [0.5] and metrics["agent_sequence_breaks"] == [1.0]
