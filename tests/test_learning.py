"""Learning: GRPO on the real loop teaches a warm-started tiny policy a tool-only task.

The task (``mtgrpo.testing.synthetic``): "What is the code of bravo?", where each entity's code
is random and written only in the generated corpus. The tiny model is warm-started in two
supervised phases on scripted episodes (played through the real environment, so the tokens are
exactly what rollouts produce), measured with vLLM rollouts (``mtgrpo.testing.warm_start``,
which the local demo ``python -m mtgrpo.testing.demo`` runs too):

1. the skill: search for the asked entity, copy the code out of the result, until the
   episodes succeed;
2. the calibration: demonstrations whose search names the asked entity only 30% of the time
   and otherwise asks for just "code" (whose top passage is another entity's; its code is
   then copied), until about 30% of the episodes succeed: a policy that can use the tool but
   has not learned what to search for.

Then ``train.run`` (vLLM rollouts, reload weight sync every step) trains it with GRPO; the
success rate of the step's rollouts (``exact_match`` in ``metrics.jsonl``) must reach 70%, for
``mt_grpo`` and for ``grpo_or``. Curves are printed (run with ``-s``) and recorded in
docs/trainer.md.
"""

from __future__ import annotations

import json
import time

import pytest

from mtgrpo.contract import TrainerConfig
from mtgrpo.testing.warm_start import SKILL_TARGET, TEMPERATURE, WARM_MAX
from mtgrpo.trainer.paths import RunPaths

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

GRPO_STEPS = 15
GRPO_LR = 2e-4
GOAL = 0.7


def _config(model_dir, url, algorithm, steps=GRPO_STEPS, max_staleness=0):
    return TrainerConfig(
        model_name_or_path=str(model_dir), generation_backend="vllm", vllm_server_url=url,
        weight_sync="reload", vllm_request_timeout_s=120, algorithm=algorithm,
        num_generations=4, per_device_train_batch_size=32, gradient_accumulation_steps=1,
        max_steps=steps, num_epochs=100, learning_rate=GRPO_LR, max_grad_norm=1.0,
        temperature=TEMPERATURE, eval_steps=0, save_steps=10_000, max_turns=2,
        max_tool_calls=1, max_tokens_per_turn=40, max_completion_length=128,
        search_max_tokens=32, reward_format=0.0, reward_xml_count=0.0, seed=0,
        max_staleness=max_staleness)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    from mtgrpo.testing.synthetic import write_task

    return write_task(tmp_path_factory.mktemp("learning") / "task")


@pytest.fixture(scope="module")
def warm_model(vllm_server, tiny_model_dir, task, tmp_path_factory):
    """The tiny model after the supervised warm start (``mtgrpo.testing.warm_start``, saved to
    a directory), its best skill-phase success and its success after the calibration."""
    from mtgrpo.testing.warm_start import warm_start

    result = warm_start(tiny_model_dir, task, vllm_server.url,
                        tmp_path_factory.mktemp("warm") / "model",
                        tmp_path_factory.mktemp("demos"))
    print("\n" + result.summary())
    return result.model_dir, result.skill_success, result.warm_success


@pytest.mark.parametrize("algorithm, max_staleness",
                         [("mt_grpo", 0), ("grpo_or", 0), ("mt_grpo", 1)],
                         ids=["mt_grpo", "grpo_or", "mt_grpo-overlap"])
def test_grpo_reaches_goal(vllm_server, warm_model, task, tmp_path, algorithm, max_staleness):
    """``mt-grpo-overlap``: the same with ``max_staleness: 1`` (one version behind, TIS)."""
    from mtgrpo.testing.synthetic import task_parser
    from mtgrpo.trainer.train import run

    model_dir, skill_success, warm_success = warm_model
    out = tmp_path / "out"
    paths = RunPaths(str(model_dir), task / "train.jsonl", task / "eval.jsonl",
                     task / "corpus", out, out / "model", out / "checkpoints")
    start = time.perf_counter()
    summary = run(_config(model_dir, vllm_server.url, algorithm, max_staleness=max_staleness),
                  paths, parser=task_parser())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    curve = [round(r["exact_match"], 3) for r in rows]
    found = [round(r["reward_answer_in_result"], 2) for r in rows]  # searched the right thing
    print(f"\n{algorithm} (max_staleness {max_staleness}): success per step {curve}; "
          f"answer in the search result {found}; held-out eval "
          f"{summary['eval']['eval_exact_match']:.3f}; {time.perf_counter() - start:.0f} s")
    if len(curve) != GRPO_STEPS or summary["global_step"] != GRPO_STEPS:  # not a goal: strict
        raise RuntimeError(f"expected {GRPO_STEPS} logged steps, got {curve}")
    assert skill_success >= SKILL_TARGET, skill_success  # the copy skill was learned
    assert 0.1 <= warm_success <= WARM_MAX, warm_success  # about 30%: room to learn
    # The best 3-step average: one lucky batch is not enough.
    best = max(sum(curve[i:i + 3]) / 3 for i in range(len(curve) - 2))
    assert best >= GOAL, curve


def test_agent_reaches_goal(vllm_server, warm_model, task, tmp_path):
    """The same task played by an agent: the retrieval agent (a plain ``openai``-client loop,
    ``mtgrpo/examples/retrieval_agent.py``) calls the agent endpoint, its calls are recorded
    token for token and trained with per-call MT-GRPO credit (docs/agents.md)."""
    from mtgrpo.testing.synthetic import task_parser
    from mtgrpo.trainer.train import run

    model_dir, _, warm_success = warm_model
    out = tmp_path / "out"
    paths = RunPaths(str(model_dir), task / "train.jsonl", task / "eval.jsonl",
                     task / "corpus", out, out / "model", out / "checkpoints")
    config = _config(model_dir, vllm_server.url, "mt_grpo").replace(
        agent="mtgrpo.examples.retrieval_agent:RetrievalAgent", agent_timeout_s=120)
    start = time.perf_counter()
    summary = run(config, paths, parser=task_parser())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    curve = [round(r["exact_match"], 3) for r in rows]
    print(f"\nagent (mt_grpo per call): success per step {curve}; calls per episode "
          f"{[round(r['agent_calls_per_episode'], 2) for r in rows]}; held-out eval "
          f"{summary['eval']['eval_exact_match']:.3f}; {time.perf_counter() - start:.0f} s")
    if len(curve) != GRPO_STEPS or summary["global_step"] != GRPO_STEPS:
        raise RuntimeError(f"expected {GRPO_STEPS} logged steps, got {curve}")
    assert all(r["agent_sequence_breaks"] == 0 and r["agent_failed_share"] == 0 for r in rows)
    assert 0.1 <= warm_success <= WARM_MAX, warm_success
    best = max(sum(curve[i:i + 3]) / 3 for i in range(len(curve) - 2))
    assert best >= GOAL, curve
