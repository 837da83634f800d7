"""A synthetic tool-use task whose answers can only be found with the search tool.

Every entity (a NATO-alphabet word) gets a random code (a number word) in a generated corpus:
one passage per entity, "The code of bravo is seven." The question "What is the code of
bravo?" names the entity but not the code, and the codes are drawn at random per task seed, so
a policy can only answer by searching (held-out entities are never asked during training).
All words are single tokens of the tiny tokenizer (``mtgrpo.testing.tiny``), so a two-layer
model can learn to copy them.

``ScriptedSampler`` plays the ideal policy (search for the entity, answer with the code from
the result) through the real environment: its episodes are the supervised warm-start data. With
``query_accuracy < 1`` only that fraction of its searches names the asked entity; the others
search for just "code", whose top passage is some other entity's, and the code copied from it
is (usually) wrong: a policy that can use the tool but has not learned what to search for,
which is what the search turn's own reward in MT-GRPO credits.

    python -m mtgrpo.testing.synthetic DIR     # DIR/train.jsonl, DIR/eval.jsonl, DIR/corpus/
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path
from typing import Sequence

from mtgrpo.rollout.client import Sample
from mtgrpo.trainer.types import QARecord

ENTITIES = ("bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
            "november oscar quebec romeo sierra tango uniform victor whiskey xray yankee "
            "zulu").split()
CODES = "zero one two three four six seven eight nine ten".split()

# Short turns (no <reasoning>): the tiny model learns the format in seconds.
CALL_TURN = '<tool>\n{{"name": "wiki_search", "args": {{"query": "{query}"}}}}\n</tool>'
VAGUE_QUERY = "code"  # matches every passage: the top one is some other entity's, not the asked
ANSWER_TURN = "<answer> {code} </answer>"
SYSTEM_PROMPT = ("Find the code with the wiki_search tool, then answer. Reply with "
                 "<tool> JSON </tool> or <answer> code </answer>.")
_QUESTION = re.compile(r"What is the code of (\w+)\?")
_RESULT = re.compile(r"The code of (\w+) is (\w+)\.")


def make_task(seed: int = 0, n_eval: int = 6) -> tuple[list[QARecord], list[QARecord], list[dict]]:
    """``(train records, held-out eval records, corpus passages)`` for one task seed."""
    rng = random.Random(seed)
    codes = {e: rng.choice(CODES) for e in ENTITIES}
    passages = [{"id": f"p{i}", "title": e.capitalize(), "text": f"The code of {e} is {codes[e]}."}
                for i, e in enumerate(ENTITIES)]
    entities = list(ENTITIES)
    rng.shuffle(entities)
    records = [QARecord(id=f"code-{e}", question=f"What is the code of {e}?", aliases=(codes[e],))
               for e in entities]
    return records[n_eval:], records[:n_eval], passages


def write_task(out_dir: str | Path, seed: int = 0, n_eval: int = 6) -> Path:
    """Write ``train.jsonl``, ``eval.jsonl`` and ``corpus/passages.jsonl`` under ``out_dir``."""
    out = Path(out_dir)
    (out / "corpus").mkdir(parents=True, exist_ok=True)
    train, evals, passages = make_task(seed, n_eval)
    for name, records in (("train.jsonl", train), ("eval.jsonl", evals)):
        lines = [json.dumps({"id": r.id, "question": r.question, "aliases": list(r.aliases)})
                 for r in records]
        (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "corpus" / "passages.jsonl").write_text(
        "\n".join(json.dumps(p, sort_keys=True) for p in passages) + "\n", encoding="utf-8")
    return out


def task_parser():
    """The paper's XML format with a short system prompt (the tiny model's prompts stay short)."""
    from mtgrpo.trainer.parsers import XMLParser

    class SyntheticTaskParser(XMLParser):
        def system_prompt(self, tools) -> str:
            return SYSTEM_PROMPT

    return SyntheticTaskParser()


class ScriptedSampler:
    """A sampler that writes the ideal turn for each prompt: search, then answer from the result.

    It reads the question and the latest tool result from the decoded prompt; its token ids are
    the tokenizer's encoding of the scripted text (logprobs 0). With ``query_accuracy < 1``, a
    search names the asked entity with that probability (seeded) and otherwise asks only for
    "code"; the answer is always the code in the result.
    """

    def __init__(self, tokenizer, query_accuracy: float = 1.0, seed: int = 0):
        self.tokenizer = tokenizer
        self.query_accuracy = query_accuracy
        self.rng = random.Random(seed)

    def turn_text(self, prompt_text: str) -> str:
        results = _RESULT.findall(prompt_text)
        if results:
            return ANSWER_TURN.format(code=results[-1][1])
        if self.rng.random() >= self.query_accuracy:
            return CALL_TURN.format(query=VAGUE_QUERY)
        questions = _QUESTION.findall(prompt_text)
        return CALL_TURN.format(query=f"code of {questions[-1] if questions else 'unknown'}")

    async def generate(self, prompts: Sequence[Sequence[int]], *, max_tokens, temperature: float,
                       top_p: float, stop: Sequence[str], seed=None) -> list[Sample]:
        out = []
        for prompt in prompts:
            text = self.turn_text(self.tokenizer.decode(list(prompt)))
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            out.append(Sample(list(ids), [0.0] * len(ids), text, "stop"))
        return out

    def close(self) -> None:
        """Nothing to release."""


def demonstrations(environment_factory, tokenizer, work_dir: str | Path, seeds: Sequence[int],
                   query_accuracy: float = 1.0):
    """Scripted episodes over several random code assignments (one corpus per seed).

    The same entity has a different code in each corpus, so a model trained on these cannot
    memorise codes: it has to copy the entity into the query and the code out of the result.
    ``environment_factory(corpus_dir)`` builds the environment for one corpus;
    ``query_accuracy`` is the scripted policy's (see ``ScriptedSampler``).
    """
    from mtgrpo.trainer.data import load_records

    episodes = []
    sampler = ScriptedSampler(tokenizer, query_accuracy, seed=len(seeds))
    for seed in seeds:
        task = write_task(Path(work_dir) / f"demo-task-{seed}", seed=seed, n_eval=0)
        env = environment_factory(task / "corpus")
        episodes += env.rollout_sync(load_records(task / "train.jsonl"), 1, sampler)
    return episodes


def supervised_steps(model, episodes, steps: int, *, lr: float = 3e-3, pad_id: int = 0,
                     batch_size: int = 32, optimizer=None, seed: int = 0):
    """``steps`` AdamW steps of next-token loss on random mini-batches of the episodes' sampled
    tokens. Environment tokens (tool results) are context, not targets, exactly as in GRPO.
    Returns the optimizer so that warm-starting can continue in chunks (a given optimizer keeps
    its own lr).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)  # callers pass a new seed per chunk
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        pick = torch.randperm(len(episodes), generator=generator)[:batch_size].tolist()
        batch = [episodes[i] for i in pick]
        rows = [ep.prompt_ids + ep.completion_ids for ep in batch]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (row, ep) in enumerate(zip(rows, batch)):
            target = [0] * len(ep.prompt_ids) + list(ep.env_mask)
            ids[i, :len(row)] = torch.tensor(row)
            attention[i, :len(row)] = 1
            labels[i, :len(row)] = torch.tensor([t if m else -100 for t, m in zip(row, target)])
        loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return optimizer



def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mtgrpo.testing.synthetic OUT_DIR``: the synthetic code-lookup task."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m mtgrpo.testing.synthetic",
        description="Write the synthetic code-lookup task (train.jsonl, eval.jsonl and a "
                    "generated corpus) that the local recipes and the learning tests use.")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write (created)")
    parser.add_argument("--seed", type=int, default=0, help="which code assignment (default 0)")
    args = parser.parse_args(argv)
    print(write_task(args.out_dir, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
