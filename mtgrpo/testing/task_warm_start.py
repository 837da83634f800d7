"""``mtgrpo train --warm-start``: teach a small model a task's tool-call format before GRPO.

A random or tiny model never calls a new task's tool, so every reward stays 0 and nothing can
be seen learning. This supervised warm start writes one scripted episode per training record,
through the task's own environment (its system prompt, its parser's format, its real tools):

1. a first turn that calls the task's first tool with its example call
   (``example_args``, else placeholder values from its ``parameters``);
2. the tool's real result, appended by the environment as in training;
3. a final answer turn with the record's first alias.

A few chunks of next-token loss on the assistant turns follow (tool results are context, as in
GRPO), each ended by a rollout of the model itself that counts the episodes whose first turn is
a well-formed, executed call. It stops once ``target`` of them are, and saves the model. The
model then calls the tool in the format the task parses, with arguments it has yet to learn to
choose: what GRPO is for. It teaches the format, not the task.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

CHUNK_STEPS = 20
MAX_CHUNKS = 15
TARGET = 0.8  # share of measured episodes whose first turn is a call that executed
MEASURE_RECORDS = 8
LEARNING_RATE = 3e-3  # the synthetic warm start's skill rate (mtgrpo/testing/warm_start.py)


@dataclass(frozen=True)
class FormatWarmStart:
    model_dir: Path
    called: list[float]  # after each chunk: share of episodes whose first call executed
    seconds: float

    def summary(self) -> str:
        return (f"warm start: tool called in {self.called[-1]:.0%} of episodes after "
                f"{len(self.called) * CHUNK_STEPS} steps ({self.seconds:.0f} s; per chunk "
                f"{[round(c, 2) for c in self.called]})")


class FormatSampler:
    """Writes the scripted turn for each prompt: call the tool, then answer with the record's
    first alias. Its ids are the tokenizer's encoding of that text (logprobs 0)."""

    def __init__(self, tokenizer, parser, tool, records: Sequence):
        self.tokenizer = tokenizer
        self.parser = parser
        self.call = parser.example_call(tool)
        # longest question first: one question that contains another is still told apart
        self.answers = sorted(((r.question, r.aliases[0] if r.aliases else "") for r in records),
                              key=lambda qa: -len(qa[0]))
        self.result_open = f"<{parser.result_tag}>"
        self.system_mentions = 0  # result tags the system prompt itself names (calibrate)

    def _reasoning(self, text: str) -> str:
        tag = self.parser.reasoning_tag
        return f"<{tag}>\n{text}\n</{tag}>\n"

    def turn_text(self, prompt_text: str) -> str:
        if prompt_text.count(self.result_open) > self.system_mentions:
            answer = next((a for q, a in self.answers if q in prompt_text), "")
            tag = self.parser.answer_tag
            return self._reasoning("The result answers it.") + f"<{tag}>\n{answer}\n</{tag}>"
        return self._reasoning("I should use the tool.") + self.call

    def calibrate(self, system_prompt: str) -> "FormatSampler":
        """The system prompt may itself name the result tag: count those mentions once."""
        self.system_mentions = system_prompt.count(self.result_open)
        return self

    async def generate(self, prompts, *, max_tokens, temperature, top_p, stop, seed=None):
        from mtgrpo.rollout.client import Sample

        out = []
        for prompt in prompts:
            text = self.turn_text(self.tokenizer.decode(list(prompt)))
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            out.append(Sample(list(ids), [0.0] * len(ids), text, "stop"))
        return out

    def close(self) -> None:
        """Nothing to release."""


def _first_call_executed(episode) -> bool:
    turns = episode.turns
    return len(turns) > 1 and turns[1].role == "tool" and bool(turns[1].tool_ok)


def warm_start_task(config, paths, out_dir: str | Path, *,
                    progress: Callable[[str], None] | None = None,
                    target: float = TARGET, max_chunks: int = MAX_CHUNKS,
                    source: str = "") -> FormatWarmStart:
    """Warm-start ``config.model_name_or_path`` on the task the config names; save the model
    and tokenizer to ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mtgrpo.errors import Problem, UserError
    from mtgrpo.rollout.sampler import TransformersSampler
    from mtgrpo.task.loading import load_task
    from mtgrpo.testing.synthetic import supervised_steps
    from mtgrpo.trainer.environment import ToolEnvironment

    started = time.perf_counter()
    say = progress or (lambda line: None)
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(config.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(config.model_name_or_path,
                                                 dtype=torch.float32)
    task = load_task(config, paths, tokenizer, source=source)
    try:
        if not task.tools:
            raise UserError(Problem(source, "trainer.task_tools", "--warm-start teaches a "
                                    "tool's call format, and the task has no tool",
                                    "a task with at least one tool"))
        records = list(task.load_records(Path(paths.train_file)))
        if not records:
            raise UserError(Problem(str(paths.train_file), "", "no records to warm start on",
                                    "a train_file with records"))
        environment = ToolEnvironment.from_config(config, tokenizer, task.tools,
                                                  parser=task.parser)
        tool = next(iter(task.tools.values()))
        scripted = FormatSampler(tokenizer, task.parser, tool, records).calibrate(
            environment.system_prompt)
        demos = environment.rollout_sync(records, 1, scripted)
        unusable = sum(not _first_call_executed(e) for e in demos)
        if unusable == len(demos):
            raise UserError(Problem(source, "trainer.task_tools", f"the example call of tool "
                                    f"{tool.name!r} ({scripted.call!r}) did not execute in any "
                                    "scripted episode", "example_args the tool accepts"))
        sampler = TransformersSampler(model, tokenizer, logprobs=False)
        rng = random.Random(config.seed)
        measured = rng.sample(records, min(MEASURE_RECORDS, len(records)))
        called: list[float] = []
        optimizer = None
        for chunk in range(max_chunks):
            optimizer = supervised_steps(model, demos, CHUNK_STEPS, lr=LEARNING_RATE,
                                         pad_id=tokenizer.pad_token_id or 0,
                                         batch_size=16, optimizer=optimizer, seed=chunk)
            episodes = environment.rollout_sync(measured, 1, sampler)
            called.append(sum(map(_first_call_executed, episodes)) / len(episodes))
            say(f"warm start chunk {chunk + 1}: tool called in {called[-1]:.0%} of episodes")
            if called[-1] >= target:
                break
    finally:
        task.close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out)
    return FormatWarmStart(out, called, time.perf_counter() - started)

