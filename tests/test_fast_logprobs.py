"""The padding-free log-prob path gives TRL's numbers and gradients (CPU, tiny model, float32)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from mtgrpo.trainer.fast_logprobs import (  # noqa: E402
    PACKED_ATTENTION,
    ChunkedLogprobsMixin,
    contiguous_rows,
    pack_rows,
)

TEMPERATURE = 0.7
PROMPT, COMPLETION = 7, 11
# (left padding of the prompt, right padding of the completion) per row
PADDING = [(0, 0), (3, 2), (5, 9), (1, 10), (6, 0)]


@pytest.fixture(scope="module")
def trainer(tiny_model_dir, tmp_path_factory):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    class Trainer(ChunkedLogprobsMixin, GRPOTrainer):
        pass

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    args = GRPOConfig(
        output_dir=str(tmp_path_factory.mktemp("grpo")), per_device_train_batch_size=4,
        num_generations=4, temperature=TEMPERATURE, max_completion_length=COMPLETION,
        bf16=False, use_cpu=True, report_to="none")
    return Trainer(
        model=model, reward_funcs=lambda completions, **_: [0.0] * len(completions), args=args,
        train_dataset=Dataset.from_dict({"prompt": ["hi"] * 8}), processing_class=tokenizer)


def make_batch(vocab: int, padding=PADDING, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (len(padding), PROMPT + COMPLETION), generator=g)
    mask = torch.ones_like(ids)
    for row, (left, right) in enumerate(padding):
        mask[row, :left] = 0
        mask[row, PROMPT + COMPLETION - right:] = 0
    return ids.masked_fill(mask == 0, 0), mask


def trl_path(trainer, *args, **kwargs):
    trainer.packed_logprobs = False
    try:
        return trainer._get_per_token_logps_and_entropies(*args, **kwargs)
    finally:
        trainer.packed_logprobs = True


def naive(model, ids, mask):
    """Full float32 logits / T, log-softmax, gather: the textbook definition."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, -COMPLETION - 1:-1] / TEMPERATURE
    logp_all = logits.log_softmax(-1)
    target = ids[:, -COMPLETION:]
    logps = logp_all.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    real = mask[:, -COMPLETION:].bool()
    return logps * real, entropy * real


@pytest.mark.parametrize("entropy", [False, True])
def test_logprobs_equal_trl_and_naive_reference(trainer, entropy):
    model = trainer.model
    ids, mask = make_batch(model.config.vocab_size)
    ours, ours_h, aux = trainer._get_per_token_logps_and_entropies(
        model, ids, mask, COMPLETION, compute_entropy=entropy)
    theirs, theirs_h, _ = trl_path(trainer, model, ids, mask, COMPLETION, compute_entropy=entropy)
    ref, ref_h = naive(model, ids, mask)

    assert model.config._attn_implementation == PACKED_ATTENTION
    assert ours.shape == theirs.shape == (len(PADDING), COMPLETION)
    assert ours.dtype == theirs.dtype == torch.float32 and aux is None
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert (ours[~mask[:, -COMPLETION:].bool()] == 0).all()
    assert ours[mask[:, -COMPLETION:].bool()].lt(0).all()
    if entropy:
        torch.testing.assert_close(ours_h, theirs_h, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours_h, ref_h, rtol=1e-5, atol=1e-5)
    else:
        assert ours_h is None and theirs_h is None


def test_gradients_equal_trl(trainer):
    model = trainer.model
    ids, mask = make_batch(model.config.vocab_size, seed=1)
    weights = torch.randn(len(PADDING), COMPLETION, generator=torch.Generator().manual_seed(2))

    def grads(fn):
        model.zero_grad(set_to_none=True)
        logps, entropy, _ = fn(model, ids, mask, COMPLETION, compute_entropy=True)
        ((logps * weights).sum() + 0.3 * (entropy * weights.flip(0)).sum()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ours = grads(trainer._get_per_token_logps_and_entropies)
    theirs = grads(lambda *a, **k: trl_path(trainer, *a, **k))
    model.zero_grad(set_to_none=True)
    assert ours.keys() == theirs.keys() and len(ours) == len(list(model.parameters()))
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")
    assert any(g.abs().sum() > 0 for g in ours.values())


def test_gradients_with_activation_checkpointing(trainer):
    """Checkpointed layers run again in backward and must see the same packed attention."""
    model = trainer.model
    ids, mask = make_batch(model.config.vocab_size, seed=6)

    def grads():
        model.zero_grad(set_to_none=True)
        logps, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, COMPLETION)
        logps.sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    model.train()  # layers are recomputed only in training mode (the tiny model has no dropout)
    plain = grads()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        assert all(layer.gradient_checkpointing for layer in model.model.layers)
        checkpointed = grads()
    finally:
        model.gradient_checkpointing_disable()
        model.zero_grad(set_to_none=True)
        model.eval()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-5)


def test_micro_batches_equal_one_batch(trainer):
    model = trainer.model
    ids, mask = make_batch(model.config.vocab_size, seed=3)
    whole, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, COMPLETION)
    split, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, COMPLETION, batch_size=2)
    torch.testing.assert_close(whole, split, rtol=1e-5, atol=1e-5)


def test_mask_with_holes_uses_trl_path(trainer):
    model = trainer.model
    ids, mask = make_batch(model.config.vocab_size, seed=4)
    mask[0, PROMPT + 3] = 0  # a hole inside a completion: packing would change positions
    assert not contiguous_rows(mask)
    ours, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, COMPLETION)
    theirs, _, _ = trl_path(trainer, model, ids, mask, COMPLETION)
    assert torch.equal(ours, theirs)


def test_batch_without_padding_uses_trl_path(trainer):
    model = trainer.model
    ids, mask = make_batch(model.config.vocab_size, padding=[(0, 0)] * 3, seed=7)
    ours, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, mask, COMPLETION)
    theirs, _, _ = trl_path(trainer, model, ids, mask, COMPLETION)
    assert torch.equal(ours, theirs)


def test_unpacked_calls_are_plain_sdpa(trainer, tiny_model_dir):
    """After the switch, ordinary forwards (generation, padded batches) equal an SDPA model's."""
    from transformers import AutoModelForCausalLM

    sdpa = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    ids, mask = make_batch(sdpa.config.vocab_size, seed=5)
    trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, COMPLETION)
    assert trainer.model.config._attn_implementation == PACKED_ATTENTION
    with torch.no_grad():
        ours = trainer.model(input_ids=ids, attention_mask=mask).logits
        theirs = sdpa(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], rtol=1e-5, atol=1e-5)


def test_model_prepared_by_accelerate_still_packs(tiny_model_dir):
    """Mixed precision makes accelerate wrap the forward (autocast, fp32 outputs): still TRL's head.

    The wrapping is done exactly as ``Accelerator.prepare_model`` does it with native AMP (the
    process already holds an AcceleratorState without mixed precision, so it is rebuilt by hand).
    """
    from types import MethodType

    from accelerate.utils import convert_outputs_to_fp32
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from mtgrpo.trainer.fast_logprobs import has_fused_lm_head, prepare_model_for_packing

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    assert not has_fused_lm_head(model)
    add_fused_lm_head(model, temperature=TEMPERATURE)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    model.forward = MethodType(autocast(model.forward.__func__), model)
    model.forward = MethodType(convert_outputs_to_fp32(model.forward.__func__), model)
    assert "fused_lm_head" not in model.forward.__func__.__code__.co_varnames
    assert has_fused_lm_head(model) and prepare_model_for_packing(model)


def test_pack_rows_layout():
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 9, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    kwargs, keep = pack_rows(ids, mask, logits_to_keep=3)
    assert kwargs["input_ids"].tolist() == [[5, 6, 7, 8, 1, 2, 3, 4, 9]]
    assert kwargs["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2, 3, 4]]
    # completion columns are 3..5: row 0 scores 6, 7 and 8, row 1 scores 4 and 9 (column 5 is padding)
    assert kwargs["shift_labels"].tolist() == [[6, 7, 8, -100, -100, -100, 4, 9, -100]]
    assert kwargs["cu_seq_lens_q"].tolist() == [0, 4, 9] and kwargs["max_length_q"] == 5
