"""Rollouts from a Liger-patched policy run the model's own kernels (mtgrpo/trainer/liger.py).

Liger's kernels are Triton GPU kernels: on this CPU machine a forward through them cannot run,
so a forward that works inside ``sampling_kernels`` and matches the unpatched model bit for bit
shows that every replaced piece was put back; after the context, Liger's pieces are back.
"""

from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("liger_kernel")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from mtgrpo.rollout.sampler import TransformersSampler  # noqa: E402
from mtgrpo.trainer import liger  # noqa: E402


@pytest.fixture
def family_restored():
    """Liger patches the model family's module for the whole process: undo it after the test."""
    import transformers.models.qwen2.modeling_qwen2 as family

    saved = dict(vars(family))
    yield family
    for name, value in saved.items():
        setattr(family, name, value)


def _load(path):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def test_sampling_kernels_restore_the_model_and_liger_comes_back(tiny_model_dir,
                                                                 family_restored):
    reference = _load(tiny_model_dir)
    model = _load(tiny_model_dir)
    ids = torch.arange(3, 40).reshape(1, -1)
    with torch.no_grad():
        expected = reference(input_ids=ids).logits
    assert liger.apply(model) == ["rope", "rms_norm", "swiglu"]
    swap = model.mtgrpo_kernel_swap
    patched_norm = model.model.norm.__dict__["forward"]
    patched_rope = family_restored.apply_rotary_pos_emb
    assert "Liger" in patched_norm.__qualname__ and "liger" in patched_rope.__module__
    # Every layer's norms and MLP, and the family's RoPE function and classes.
    assert len(swap.instance) == 1 + 2 * 2 + 2  # final norm, 2 layers x 2 norms, 2 MLPs
    assert {name for owner, name, _, _ in swap.attrs if owner is family_restored} >= {
        "apply_rotary_pos_emb", "Qwen2RMSNorm", "Qwen2MLP"}
    with liger.sampling_kernels(model), torch.no_grad():
        assert "forward" not in model.model.norm.__dict__
        assert family_restored.apply_rotary_pos_emb is vars(sys.modules[
            "transformers.models.qwen2.modeling_qwen2"])["apply_rotary_pos_emb"]
        assert "liger" not in family_restored.apply_rotary_pos_emb.__module__
        assert torch.equal(model(input_ids=ids).logits, expected)
    assert model.model.norm.__dict__["forward"] is patched_norm
    assert family_restored.apply_rotary_pos_emb is patched_rope


def test_the_sampler_samples_a_liger_policy_with_its_own_kernels(tiny_model_dir,
                                                                 family_restored):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [list(range(5, 12)), list(range(20, 24))]

    def sample(m):
        sampler = TransformersSampler(m, tokenizer, logprobs=True)
        return sampler.generate_sync(prompts, [6, 6], 1.0, 1.0, [], seed=3)

    # Before apply: Liger swaps the family's RoPE function for every model of the process.
    theirs = sample(_load(tiny_model_dir))
    model = _load(tiny_model_dir)
    liger.apply(model)
    model.train()  # as the trainer holds it between steps
    ours = sample(model)
    assert [s.token_ids for s in ours] == [s.token_ids for s in theirs]
    assert [s.logprobs for s in ours] == [s.logprobs for s in theirs]
    assert model.training and "forward" in model.model.norm.__dict__  # Liger's again


def test_a_model_liger_never_touched_samples_unchanged(tiny_model_dir):
    model = _load(tiny_model_dir)
    with liger.sampling_kernels(model):  # no swap recorded: nothing to undo
        assert "forward" not in model.model.norm.__dict__


def test_a_lora_wrapped_policy_finds_the_swap_of_its_base_model(tiny_model_dir, family_restored):
    from peft import LoraConfig, get_peft_model

    model = _load(tiny_model_dir)
    liger.apply(model)
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules="all-linear"))
    with liger.sampling_kernels(wrapped):
        assert "forward" not in model.model.norm.__dict__
    assert "forward" in model.model.norm.__dict__
