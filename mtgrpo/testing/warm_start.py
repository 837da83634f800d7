"""The supervised warm start that makes the tiny model's learning visible (synthetic task).

A random tiny model never calls the tool, so GRPO has nothing to reinforce. This warm start
(used by ``tests/test_learning.py`` and the local demo ``python -m mtgrpo.testing.demo``)
trains it in two supervised phases on scripted episodes, measuring success with real rollouts
after each chunk:

1. the skill: search for the asked entity, copy the code out of the result, until at least
   ``SKILL_TARGET`` of the episodes succeed (then ``SKILL_EXTRA_CHUNKS`` more);
2. the calibration: demonstrations whose search names the asked entity only 30 % of the time
   (otherwise just "code": another entity's passage comes first), until success is at most
   ``WARM_MAX``: a policy that can use the tool but has not learned what to search for.

docs/trainer.md ("Learning") records the curves and what did not work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

TEMPERATURE = 0.7
SKILL_CHUNK_STEPS = 50  # supervised steps between success measurements (skill phase)
SKILL_MAX_CHUNKS = 24
SKILL_TARGET = 0.9  # the copy skill is learned: searching episodes succeed
SKILL_EXTRA_CHUNKS = 2  # then consolidated: a skill just learned is fragile
QUERY_ACCURACY = 0.3  # calibration demonstrations that search for the asked entity
CALIBRATION_CHUNK_STEPS = 20
CALIBRATION_MAX_CHUNKS = 12
CALIBRATION_LR = 3e-4  # the search decision is one token: it follows the last few batches
WARM_MAX = 0.4  # calibrated once success is at most this (about 30%; 72 episodes measured)
DEMO_SEEDS = range(1, 9)  # task seed 0 is the one trained and evaluated


@dataclass(frozen=True)
class WarmStart:
    """The saved model and the (success, share searching the asked entity) measurements."""

    model_dir: Path
    skill: list[tuple[float, float]]
    calibration: list[tuple[float, float]]
    skill_seconds: float
    seconds: float

    @property
    def skill_success(self) -> float:
        return max(success for success, _ in self.skill)

    @property
    def warm_success(self) -> float:
        return self.calibration[-1][0]

    def summary(self) -> str:
        return (f"warm-up skill: (success, asked) per {SKILL_CHUNK_STEPS} steps {self.skill} "
                f"({self.skill_seconds:.0f} s)\n"
                f"warm-up calibration: (success, asked) per {CALIBRATION_CHUNK_STEPS} steps "
                f"{self.calibration} ({self.seconds:.0f} s in all)")


def warm_start(model_dir: str | Path, task_dir: str | Path, server_url: str,
               out_dir: str | Path, work_dir: str | Path, *, search_max_tokens: int = 32,
               max_tokens_per_turn: int = 40, max_completion_length: int = 128,
               progress=None) -> WarmStart:
    """Warm-start the model in ``model_dir`` (served by the vLLM server at ``server_url``,
    whose weights are replaced by every measurement) and save it to ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mtgrpo.contract import TrainerConfig
    from mtgrpo.rollout.sampler import VLLMSampler
    from mtgrpo.rollout.weight_sync import ReloadWeightSync
    from mtgrpo.testing.synthetic import demonstrations, supervised_steps, task_parser
    from mtgrpo.trainer.data import load_records
    from mtgrpo.trainer.environment import ToolEnvironment
    from mtgrpo.trainer.rewards import exact_match
    from mtgrpo.trainer.tools.wiki_search import WikiSearch, tokenizer_budget

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = TrainerConfig(model_name_or_path=str(model_dir), max_turns=2, max_tool_calls=1,
                        temperature=TEMPERATURE, max_tokens_per_turn=max_tokens_per_turn,
                        max_completion_length=max_completion_length,
                        search_max_tokens=search_max_tokens)
    count, cut = tokenizer_budget(tokenizer)
    parser = task_parser()
    work = Path(work_dir)

    def environment(corpus_dir):
        search = WikiSearch(corpus_dir, top_k=1, max_tokens=cfg.search_max_tokens,
                            count_tokens=count, truncate=cut)
        return ToolEnvironment.from_config(cfg, tokenizer, {search.name: search}, parser=parser)

    # Demonstrations on other code assignments than the task's: copying is learnable, the
    # task's own codes are not memorised.
    skill_demos = demonstrations(environment, tokenizer, work / "demos", DEMO_SEEDS)
    calibration_demos = demonstrations(environment, tokenizer, work / "calibration", DEMO_SEEDS,
                                       query_accuracy=QUERY_ACCURACY)
    env = environment(Path(task_dir) / "corpus")
    records = load_records(Path(task_dir) / "train.jsonl")
    sync = ReloadWeightSync(server_url)
    sampler = VLLMSampler(server_url)
    skill: list[tuple[float, float]] = []
    calibration: list[tuple[float, float]] = []
    optimizer, start = None, time.perf_counter()
    say = progress or (lambda text: None)

    def measure():
        """(success, share of episodes whose search names the asked entity), 72 episodes."""
        sync.push(model)
        episodes = env.rollout_sync(records * 4, 1, sampler)
        success = sum(exact_match(parser.final_answer(e), e.record.aliases)
                      for e in episodes) / len(episodes)
        asked = sum(f'"code of {e.record.question.split()[-1].rstrip("?")}"'
                    in tokenizer.decode(e.completion_ids) for e in episodes) / len(episodes)
        return round(success, 3), round(asked, 3)

    def train(demos, steps, seed, **kwargs):
        return supervised_steps(model, demos, steps, pad_id=tokenizer.pad_token_id,
                                seed=seed, **kwargs)

    try:
        # Phase 1, the skill (a sharp jump after ~300-650 steps), then consolidated.
        for chunk in range(SKILL_MAX_CHUNKS):
            optimizer = train(skill_demos, SKILL_CHUNK_STEPS, chunk, lr=3e-3, optimizer=optimizer)
            skill.append(measure())
            say(f"warm-up skill chunk {chunk + 1}: success {skill[-1][0]:.2f}")
            learned = [i for i, (success, _) in enumerate(skill) if success >= SKILL_TARGET]
            if learned and len(skill) > learned[0] + SKILL_EXTRA_CHUNKS:
                break
        skill_seconds = time.perf_counter() - start
        # Phase 2, the calibration, with a fresh optimizer (the skill's Adam moments belong to
        # another loss). Every demonstration still copies the code out of its result: only the
        # query changes, so the copy skill is not unlearned (docs/trainer.md).
        optimizer = None
        for chunk in range(CALIBRATION_MAX_CHUNKS):
            optimizer = train(calibration_demos, CALIBRATION_CHUNK_STEPS, 1000 + chunk,
                              lr=CALIBRATION_LR, optimizer=optimizer)
            calibration.append(measure())
            say(f"warm-up calibration chunk {chunk + 1}: success {calibration[-1][0]:.2f}")
            if calibration[-1][0] <= WARM_MAX:
                break
    finally:
        sync.close()
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return WarmStart(out, skill, calibration, skill_seconds, time.perf_counter() - start)
