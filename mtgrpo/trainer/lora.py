"""LoRA: wrap the policy in peft adapters when ``lora_r`` > 0.

``apply_lora(model, config)`` returns a ``peft.PeftModel`` whose only trainable parameters are
the adapters (``lora_A``/``lora_B``; the base weights are frozen, so the Trainer's optimizer
holds only the adapters). Adapter weights stay fp32 over a bf16 base (peft's
``autocast_adapter_dtype``), so small learning rates are not rounded away in them. TRL's
GRPOTrainer turns on ``enable_input_require_grads`` for a peft model under gradient
checkpointing; with ``beta`` > 0 it keeps a frozen copy of the initial adapter as the reference.

Only LoRA on linear layers is accepted: the rollout push merges ``W + scaling * B @ A`` per
linear layer (``mtgrpo.rollout.policy_weights``), and a tied LM head cannot carry an adapter
its tied input embedding does not share.
"""

from __future__ import annotations

from mtgrpo.contract import TrainerConfig
from mtgrpo.contract.config import lora_target_list
from mtgrpo.errors import Problem, UserError

KEY = "trainer.lora_target_modules"


def lora_config(config: TrainerConfig):
    from peft import LoraConfig

    targets = lora_target_list(config.lora_target_modules)
    return LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        bias="none", task_type="CAUSAL_LM")


def apply_lora(model, config: TrainerConfig, *, source: str = ""):
    """``model`` with fresh LoRA adapters (peft); ``model`` itself when ``lora_r`` is 0."""
    if not config.lora_r:
        return model
    try:
        from peft import get_peft_model
        from peft.tuners.lora import Linear as LoraLinear
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        raise UserError(Problem(source, "trainer.lora_r", "LoRA needs the peft package, which is "
                                "not installed", "pip install 'mtgrpo[trainer]'")) from None
    allowed = _linear_names(model)
    try:
        peft_model = get_peft_model(model, lora_config(config))
    except ValueError as err:  # e.g. "Target modules {...} not found in the base model"
        raise UserError(Problem(source, KEY, f"{config.lora_target_modules!r}: {err}",
                                allowed)) from None
    layers = {n: m for n, m in peft_model.get_base_model().named_modules()
              if isinstance(m, BaseTunerLayer)}
    other = sorted(n for n, m in layers.items() if not isinstance(m, LoraLinear))
    if other:
        raise UserError(Problem(source, KEY, f"adapters on non-linear modules ({other[0]}, ...) "
                                "cannot be merged for the rollout server", allowed))
    head = peft_model.get_base_model().get_output_embeddings()
    tied = getattr(peft_model.get_base_model().config, "tie_word_embeddings", False)
    if tied and isinstance(head, BaseTunerLayer):
        raise UserError(Problem(source, KEY, "the LM head is tied to the input embedding, so "
                                "an adapter on it cannot be served", "leave lm_head out"))
    return peft_model


def _linear_names(model) -> str:
    import torch

    names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear)} - {"lm_head"})
    return "all-linear, or some of: " + ",".join(names)
