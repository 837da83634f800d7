"""The answer turn attends to the tool result, and the tool result carries no loss.

Runs TRL's own batch building (``_generate_and_score_completions``) and loss (``compute_loss``)
through MTGRPOTrainer on the tiny model, with a scripted rollout whose episodes are
[reasoning + tool call] [tool result] [answer]. Proves:

1. the attention mask covers the tool-result tokens while the loss mask (TRL's tool_mask)
   excludes them;
2. changing one tool-result token changes the answer tokens' log-probabilities under the
   attention mask the trainer uses, while under the known defect (loss mask used as the
   attention mask) it would not: the test can tell the two apart;
3. the loss gradient with respect to the tool-result positions' log-probabilities is exactly
   zero while the sampled positions' is not, and the advantages written at tool-result
   positions do not change the loss.
"""

from __future__ import annotations

import pytest
import torch

from mtgrpo.contract import TrainerConfig
from mtgrpo.trainer.paths import RunPaths
from mtgrpo.trainer.types import Episode, QARecord, RewardBreakdown, Turn

RECORD = QARecord(id="q0", question="What is the code of bravo?", aliases=("seven",))


def _episodes(tokenizer, answers):
    prompt = tokenizer.encode(tokenizer.apply_chat_template(
        [{"role": "user", "content": RECORD.question}], add_generation_prompt=True, tokenize=False))
    call = tokenizer.encode('<tool> {"name": "wiki_search", "args": {"query": "bravo"}} </tool>'
                            "<|im_end|>")
    result = tokenizer.encode("\n<|im_start|>user\n<result> The code of bravo is seven. </result>"
                              "<|im_end|>\n<|im_start|>assistant\n")
    episodes = []
    for answer in answers:
        ans = tokenizer.encode(f"<answer> {answer} </answer><|im_end|>")
        episodes.append(Episode(record=RECORD, prompt_ids=list(prompt), turns=[
            Turn("assistant", "", call, [-1.0] * len(call)),
            Turn("tool", "", result, None, tool_ok=True),
            Turn("assistant", f"<answer> {answer} </answer>", ans, [-1.0] * len(ans))]))
    return episodes


def _scorer(episode):
    right = episode.turns[-1].text == "<answer> seven </answer>"
    return RewardBreakdown(turn=0.7, outcome=2.0 if right else 0.0,
                           components={"exact_match": float(right)})


@pytest.fixture(scope="module")
def built(tiny_model_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mtgrpo.trainer.grpo_trainer import MTGRPOTrainer
    from mtgrpo.trainer.train import grpo_args

    tmp = tmp_path_factory.mktemp("attn")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    cfg = TrainerConfig(model_name_or_path=str(tiny_model_dir), num_generations=2,
                        per_device_train_batch_size=2, gradient_accumulation_steps=1,
                        max_steps=1, eval_steps=0, learning_rate=1e-3)
    paths = RunPaths(str(tiny_model_dir), tmp / "t.jsonl", None, tmp, tmp / "out",
                     tmp / "model", tmp / "ckpt")
    episodes = _episodes(tokenizer, ["seven", "three"])
    trainer = MTGRPOTrainer(model, grpo_args(cfg, paths), processing_class=tokenizer, config=cfg,
                            train_records=[RECORD], rollout=lambda recs: episodes[:len(recs)],
                            scorer=_scorer)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop in a real run
    batch = trainer._generate_and_score_completions([{"prompt": "0"}, {"prompt": "0"}])
    return trainer, batch, episodes


def _answer_logps(trainer, batch, attention_mask):
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, attention_mask, batch["completion_ids"].size(1))
    return logps


def _spans(episode):
    call, result, answer = (len(t.token_ids) for t in episode.turns)
    return slice(call, call + result), slice(call + result, call + result + answer)


def test_tool_result_is_attended_but_not_in_the_loss_mask(built):
    trainer, batch, episodes = built
    tool, answer = _spans(episodes[0])
    assert batch["completion_mask"][:, tool].eq(1).all()  # attention: kept
    assert batch["tool_mask"][:, tool].eq(0).all()  # loss: excluded
    assert batch["tool_mask"][:, answer].eq(1).all()
    assert batch["tool_mask"][:, :tool.start].eq(1).all()


# Both log-prob paths: TRL's padded one and the padding-free mixin (fast_logprobs.py).
PATHS = pytest.mark.parametrize("packed", [False, True], ids=["trl", "packed"])


@PATHS
def test_answer_logprobs_depend_on_tool_result_tokens(built, packed, monkeypatch):
    trainer, batch, episodes = built
    monkeypatch.setattr(trainer, "packed_logprobs", packed, raising=False)
    tool, answer = _spans(episodes[0])
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    before = _answer_logps(trainer, batch, attention)

    perturbed = dict(batch)
    perturbed["completion_ids"] = batch["completion_ids"].clone()
    target = tool.start + (tool.stop - tool.start) // 2  # a token inside the result text
    perturbed["completion_ids"][:, target] = (perturbed["completion_ids"][:, target] + 7) % 500
    after = _answer_logps(trainer, perturbed, attention)
    assert (before[:, answer] - after[:, answer]).abs().max() > 1e-4  # the answer sees it

    # The defect this guards against: loss mask used as attention mask -> no dependence.
    defect = torch.cat([batch["prompt_mask"], batch["completion_mask"] * batch["tool_mask"]], 1)
    d_before = _answer_logps(trainer, batch, defect)
    d_after = _answer_logps(trainer, perturbed, defect)
    assert torch.allclose(d_before[:, answer], d_after[:, answer], atol=1e-6)


@PATHS
def test_tool_result_positions_get_zero_loss_gradient(built, packed, monkeypatch):
    trainer, batch, episodes = built
    monkeypatch.setattr(trainer, "packed_logprobs", packed, raising=False)
    tool, answer = _spans(episodes[0])
    # The two episodes differ in outcome: the advantages are +/- something, not zero.
    assert batch["advantages"].dim() == 2
    assert batch["advantages"][:, answer].abs().min() > 0.1

    captured = {}
    original = trainer._get_per_token_logps_and_entropies

    def capture(*args, **kwargs):
        logps, entropies, aux = original(*args, **kwargs)
        if logps.requires_grad:
            logps.retain_grad()
            captured["logps"] = logps
        return logps, entropies, aux

    monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies", capture)
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    trainer.model.zero_grad()
    grad = captured["logps"].grad
    assert grad[:, tool].abs().max() == 0.0
    assert grad[:, answer].abs().min() > 0.0
    assert grad[:, :tool.start].abs().min() > 0.0

    # Arbitrary advantages at the tool-result positions leave the loss unchanged.
    changed = dict(batch)
    changed["advantages"] = batch["advantages"].clone()
    changed["advantages"][:, tool] = 123.0
    with torch.no_grad():
        base = trainer.compute_loss(trainer.model, batch)
        moved = trainer.compute_loss(trainer.model, changed)
    assert torch.equal(base, moved)
    # ...while changing an answer position's advantage does change it (the check can fail).
    changed["advantages"][:, answer.start] = 123.0
    with torch.no_grad():
        assert not torch.equal(base, trainer.compute_loss(trainer.model, changed))
