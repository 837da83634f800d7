"""The learner's defaults on a GPU: Liger's kernels applied at model load, fp32 master weights.

Runs only where CUDA is available (skipped on the CPU CI). Liger patches the Qwen2 module for the
whole process, so the reference without Liger is computed before it is applied.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mtgrpo.contract import TrainerConfig
from mtgrpo.trainer.master_weights import effective_weight

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _logprobs(model, ids):
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is None,
                    reason="liger-kernel not installed")
def test_liger_is_on_by_default_and_changes_no_numbers(tiny_model_dir, tmp_path):
    from mtgrpo.trainer.grpo_trainer import MTGRPOTrainer
    from mtgrpo.trainer.paths import RunPaths
    from mtgrpo.trainer.train import _load_model, grpo_args
    from mtgrpo.trainer.types import QARecord

    from transformers import AutoConfig

    # the tiny tokenizer's BPE vocabulary is smaller than its 1024 cap: stay inside it
    vocab = AutoConfig.from_pretrained(tiny_model_dir).vocab_size
    ids = torch.randint(0, vocab, (2, 64), generator=torch.Generator().manual_seed(0)).cuda()
    off = TrainerConfig(model_name_or_path=str(tiny_model_dir), liger_kernels="off")
    _, plain = _load_model(off, str(tiny_model_dir))
    assert plain.mtgrpo_liger_kernels == []
    expected = _logprobs(plain.cuda(), ids)
    del plain

    cfg = TrainerConfig(model_name_or_path=str(tiny_model_dir), num_generations=2,
                        per_device_train_batch_size=2, gradient_accumulation_steps=1,
                        max_steps=1, eval_steps=0)  # defaults: liger auto, master_weights auto
    tokenizer, model = _load_model(cfg, str(tiny_model_dir))
    assert model.mtgrpo_liger_kernels == ["rope", "rms_norm", "swiglu"]
    got = _logprobs(model.cuda(), ids)
    # bf16 model: Liger's kernels round differently from transformers' eager ones
    assert (got - expected).abs().mean() < 0.02

    paths = RunPaths(str(tiny_model_dir), tmp_path / "t.jsonl", None, tmp_path, tmp_path / "o",
                     tmp_path / "m", tmp_path / "c")
    trainer = MTGRPOTrainer(model, grpo_args(cfg, paths), processing_class=tokenizer, config=cfg,
                            train_records=[QARecord(id="q", question="q", aliases=("a",))],
                            rollout=lambda r: [], scorer=lambda e: None)
    assert trainer.master_weights.name == "fp32"  # a tiny model fits any card's half
    optimizer = trainer.create_optimizer()
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    before = [p.detach().float().clone() for p in params]
    out = trainer.model(input_ids=ids).logits.float().logsumexp(-1).mean()
    out.backward()
    with_grad = [p.grad is not None for p in params]
    optimizer.step()

    moved = [(effective_weight(optimizer, p) - b).abs().max().item()
             for p, b, g in zip(params, before, with_grad) if g]
    assert len(moved) > len(params) // 2
    # lr 1e-6: every master moves by about lr (Adam's first step is lr x sign(grad))
    assert min(moved) > 1e-7, min(moved)
