"""The precision the optimizer keeps the weights in (trainer key ``master_weights``).

A bf16 weight has 8 significant bits: an AdamW update smaller than half its last bit rounds
away. At the shipped learning rates (1e-6, tuning down to 1e-7) that is nearly every update of
a bf16 model (measured on an H200: 1.95% of the parameters changed in a step at 1e-6). So every
path keeps more precision somewhere:

- ``fp32``: :class:`MasterWeightsAdamW`, torch's AdamW over an fp32 copy of every trainable bf16
  parameter; the model stays bf16 (same forward, backward, kernels and activation memory as
  before) and receives the rounded master after each step. Per trainable parameter: bf16 weight
  2 + bf16 gradient 2 + fp32 master 4 + fp32 Adam moments 8 = 16 bytes (was 8).
  Loading the model in fp32 with bf16 autocast keeps the same 16 bytes of state but also a bf16
  cast of every weight during the forward (2 more), an fp32 residual stream in the activations,
  the LM head in fp32 (TRL's fused head is not autocast) and fp32 rollouts from the live policy;
  so the master lives in the optimizer, as DeepSpeed's does.
- ``bf16_kahan``: ``optimi.AdamW(kahan_sum=True)`` (torch-optimi): bf16 weights and moments and a
  bf16 compensation buffer that carries the rounding error of each update into the next, so
  weight + compensation follows the exact sum. 10 bytes per trainable parameter.
- DeepSpeed ZeRO (several GPUs with ``deepspeed_stage`` 2 or 3) keeps fp32 master weights of its
  own: the trainer hands it torch's AdamW and the weights are fp32 there.
- A model that is already fp32 (CPU, ``bf16: false``): torch's AdamW on its own weights.

``auto``: fp32 under DeepSpeed; without it fp32 when 16 bytes per trainable bf16 parameter take
at most half of the GPU's memory (the other half for activations, the rollout batch, the
allocator), else bf16_kahan. One 24 GB card with a 1.5B model: 24.7 GB of fp32 state would not
fit, so bf16_kahan (15.4 GB); an H200 with a 1.7B model: fp32 (27.5 GB of 150 GB).

Importing this module stays cheap (no torch at import): the planner uses the same rule.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from mtgrpo.errors import Problem, UserError

# Bytes per trainable parameter of the weights, gradients and optimizer state (AdamW).
BYTES_PER_PARAM = {"fp32": 16, "bf16_kahan": 10, "bf16": 8}
AUTO_FP32_SHARE = 0.5  # auto picks fp32 when its state takes at most this share of the GPU


@dataclass(frozen=True)
class MasterWeights:
    """The resolved choice: ``name`` (fp32 or bf16_kahan, recorded in the run's summary) and
    ``how`` (where the precision lives, for the start-up log line)."""

    name: str
    how: str
    optimizer: str  # "torch" (HF's AdamW as built), "master" (MasterWeightsAdamW), "kahan"


def resolve(setting: str, *, weights_bf16: bool, deepspeed_stage: int, trainable_params: int,
            device_bytes: int | None) -> MasterWeights:
    """The master-weight precision for one run (see the module docstring for the rule).

    weights_bf16: the trainable parameters are bf16 (or fp16); deepspeed_stage: the ZeRO stage
    DeepSpeed actually runs with (0 = no DeepSpeed); device_bytes: the GPU's memory (None: no GPU).
    """
    if deepspeed_stage:
        if setting == "bf16_kahan":
            raise UserError(Problem(
                "", "trainer.master_weights",
                f"bf16_kahan keeps bf16 weights, but DeepSpeed ZeRO-{deepspeed_stage} runs this "
                "job and keeps fp32 master weights itself",
                "auto or fp32 under DeepSpeed; bf16_kahan on one GPU or with deepspeed_stage 0"))
        return MasterWeights("fp32", f"DeepSpeed ZeRO-{deepspeed_stage}'s fp32 master weights",
                             "torch")
    if not weights_bf16:
        return MasterWeights("fp32", "the model's own fp32 weights", "torch")
    if setting == "auto":
        fits = device_bytes is None or (
            BYTES_PER_PARAM["fp32"] * trainable_params <= AUTO_FP32_SHARE * device_bytes)
        setting = "fp32" if fits else "bf16_kahan"
    if setting == "fp32":
        return MasterWeights("fp32", "fp32 master copy in the optimizer, bf16 model", "master")
    return MasterWeights("bf16_kahan", "bf16 weights, Kahan-compensated AdamW (torch-optimi)",
                         "kahan")


def optimizer_cls_and_kwargs(choice: MasterWeights, cls: type, kwargs: dict[str, Any]
                             ) -> tuple[type, dict[str, Any]]:
    """The optimizer class and kwargs for ``choice``, from the ones HF Trainer picked (AdamW)."""
    import torch

    if choice.optimizer == "torch":
        return cls, kwargs
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.AdamW)):
        raise UserError(Problem("", "trainer.master_weights",
                                f"{choice.name} is built for AdamW, the trainer chose {cls!r}",
                                "AdamW (the trainer's default optimizer)"))
    if choice.optimizer == "master":
        return _master_weights_adamw(), dict(kwargs)
    from optimi import AdamW as OptimiAdamW

    kept = {k: kwargs[k] for k in ("lr", "betas", "eps", "weight_decay") if k in kwargs}
    # optimi's AdamW decays by lr * weight_decay like torch's (decouple_lr=False); its default
    # eps (1e-6) differs from torch's (1e-8), so the trainer's value is always passed.
    return OptimiAdamW, {"eps": 1e-8, **kept, "kahan_sum": True}


@functools.cache
def _master_weights_adamw():
    import torch

    class MasterWeightsAdamW(torch.optim.AdamW):
        """torch's AdamW over fp32 copies of the low-precision parameters it is given.

        The param groups hold the fp32 masters (so LR schedulers, ``fused=True`` and the state
        dict work as for any AdamW); ``step`` copies each model gradient into its master's
        ``grad`` in fp32 (dropping the bf16 one), steps, and writes the masters back, rounded to
        nearest, into the model.
        fp32 parameters (e.g. LoRA adapters) are optimized in place. ``state_dict`` carries the
        masters, so a resumed run continues from the unrounded weights.
        """

        def __init__(self, params, **kwargs):
            groups = list(params)
            if groups and not isinstance(groups[0], dict):
                groups = [{"params": groups}]
            self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
            master_groups = []
            for group in groups:
                masters = []
                for p in group["params"]:
                    if p.dtype in (torch.bfloat16, torch.float16):
                        master = p.detach().to(torch.float32).clone()
                        self._pairs.append((p, master))
                        masters.append(master)
                    else:
                        masters.append(p)
                master_groups.append({**group, "params": masters})
            super().__init__(master_groups, **kwargs)

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:  # the closure recomputes the model's gradients first
                with torch.enable_grad():
                    loss = closure()
            for _, master in self._pairs:
                master.grad = None
            for chunk in _chunks([(p, m) for p, m in self._pairs if p.grad is not None]):
                # A multi-tensor kernel per chunk instead of a copy per parameter (about 300
                # launches at the Qwen3-1.7B shape); _foreach_copy_ casts on its fast path.
                # Chunks bound the bf16 gradients alive beside their fp32 copies: at step time
                # the model holds 2 + 4 + 8 bytes and the fp32 gradient 4 (the activations are
                # gone by then), plus one chunk.
                grads32 = [torch.empty_like(m) for _, m in chunk]
                torch._foreach_copy_(grads32, [p.grad for p, _ in chunk])
                for (p, master), g in zip(chunk, grads32):
                    master.grad = g
                    p.grad = None
            super().step()
            if self._pairs:
                torch._foreach_copy_([p for p, _ in self._pairs], [m for _, m in self._pairs])
            for _, master in self._pairs:
                master.grad = None
            return loss

        def zero_grad(self, set_to_none: bool = True):
            super().zero_grad(set_to_none)
            for p, _ in self._pairs:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

        def state_dict(self):
            state = super().state_dict()
            state["master_weights"] = [master for _, master in self._pairs]
            return state

        def load_state_dict(self, state_dict):
            state_dict = dict(state_dict)
            saved = state_dict.pop("master_weights", None)
            super().load_state_dict(state_dict)
            if saved is not None:
                if len(saved) != len(self._pairs):
                    raise ValueError(f"optimizer state has {len(saved)} master weights, the "
                                     f"model {len(self._pairs)}")
                with torch.no_grad():
                    for (p, master), value in zip(self._pairs, saved):
                        master.copy_(value)
                        p.copy_(master)

        def effective_weights(self) -> dict[int, torch.Tensor]:
            """id(model parameter) -> the fp32 weight the optimizer holds for it."""
            return {id(p): master for p, master in self._pairs}

    return MasterWeightsAdamW


CAST_CHUNK_BYTES = 512 * 2**20  # fp32 gradient bytes cast per multi-tensor kernel


def _chunks(pairs):
    """``pairs`` (model parameter, fp32 master) in runs of about CAST_CHUNK_BYTES of masters."""
    chunk, size = [], 0
    for pair in pairs:
        chunk.append(pair)
        size += pair[1].numel() * pair[1].element_size()
        if size >= CAST_CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def __getattr__(name: str):  # the class needs torch: built on first use, import stays cheap
    if name == "MasterWeightsAdamW":
        return _master_weights_adamw()
    raise AttributeError(name)


def effective_weight(optimizer, param):
    """The weight ``optimizer`` effectively holds for ``param``, in fp32: the master copy, the
    bf16 weight plus its Kahan compensation, or the weight itself."""
    import torch

    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
    masters = getattr(inner, "effective_weights", None)
    if masters is not None and id(param) in masters():
        return masters()[id(param)].detach().clone()
    value = param.detach().to(torch.float32)
    comp = inner.state.get(param, {}).get("kahan_comp") if hasattr(inner, "state") else None
    if comp is not None and comp.shape == param.shape:
        value = value + comp.to(torch.float32)
    return value
