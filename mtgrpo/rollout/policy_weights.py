"""The policy's weights as vLLM and transformers load them, LoRA adapters merged in.

A peft ``PeftModel`` names its tensors ``base_model.model.<name>.base_layer.weight`` plus
``lora_A``/``lora_B`` adapters; a server (or ``from_pretrained``) wants the base checkpoint's
names with the adapted weight ``W + scaling * B @ A``. ``policy_tensors(model)`` yields exactly
that, one tensor at a time, computed from the current weights without merging the training
model in place (its adapters keep training). For a plain model it is ``named_parameters()``.

``save_policy(model, directory)`` writes that as a ``save_pretrained``-style directory
(``config.json``, ``model.safetensors``, ``generation_config.json``): what
``ReloadWeightSync`` pushes and what the final LoRA model is saved as.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

PEFT_PREFIX = "base_model.model."
# The sampler keeps a merged copy of a LoRA policy's adapted weights (MergedPolicy) only when
# it takes at most this share of the GPU; otherwise it samples through the adapters. The
# planner (mtgrpo/plan/memory.py) applies the same rule.
MERGED_POLICY_SHARE = 0.15


def merge_fits(merged_bytes: int, gpu_bytes: int | None) -> bool:
    """Whether a merged copy of ``merged_bytes`` is kept on a GPU of ``gpu_bytes`` (None: CPU,
    always)."""
    return gpu_bytes is None or merged_bytes <= MERGED_POLICY_SHARE * gpu_bytes


def is_lora(model) -> bool:
    """Whether ``model`` is a peft ``PeftModel`` (adapters around a base model)."""
    # A PeftModel exists only once peft is imported; importing it here (seconds) just to say
    # "no" would slow every full fine-tune's first push.
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def _tuner_layer():
    from peft.tuners.tuners_utils import BaseTunerLayer

    return BaseTunerLayer


def policy_parameters(model) -> Iterator[tuple[str, object, object]]:
    """``(checkpoint name, parameter, tuner layer or None)`` in ``named_parameters`` order, tied
    parameters once. A tuner layer's ``weight`` entry is its base weight (merge it with
    ``merged_weight``); its bias is the base bias; adapters themselves are not listed."""
    if not is_lora(model):
        for name, param in model.named_parameters():
            yield name, param, None
        return
    tuner = _tuner_layer()
    seen: set[int] = set()
    skip: tuple[str, ...] = ()
    for name, module in model.get_base_model().named_modules():
        if skip and name.startswith(skip):
            continue  # inside a tuner layer: base_layer and the adapters
        if isinstance(module, tuner):
            skip = (f"{name}.",)
            base = module.get_base_layer()
            for pname, param in base.named_parameters(recurse=False):
                if id(param) not in seen:
                    seen.add(id(param))
                    yield f"{name}.{pname}", param, module if pname == "weight" else None
            continue
        for pname, param in module.named_parameters(recurse=False):
            if id(param) not in seen:
                seen.add(id(param))
                yield f"{name}.{pname}" if name else pname, param, None


def merged_weight(layer, weight):
    """``weight + sum of the active adapters' scaling * B @ A`` (fp32 sum, cast back), without
    touching the layer; the base weight alone when the adapters are disabled or merged."""
    import torch

    if layer.disable_adapters or layer.merged:
        return weight.detach()
    with torch.no_grad():
        out = weight.detach().float()
        for adapter in layer.active_adapters:
            if adapter in layer.lora_A:
                out = out + layer.get_delta_weight(adapter).float()
        return out.to(weight.dtype)


def policy_tensors(model) -> Iterator[tuple[str, object]]:
    """``(checkpoint name, tensor)`` of the policy the sampler must run, adapters merged."""
    for name, param, layer in policy_parameters(model):
        yield name, merged_weight(layer, param) if layer is not None else param.detach()


def save_policy(model, directory: str | Path) -> Path:
    """Write the (merged) policy as a directory vLLM and ``from_pretrained`` load."""
    out = Path(directory)
    if not is_lora(model):
        model.save_pretrained(out, safe_serialization=True)
        return out
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    base = model.get_base_model()
    tensors = {name: tensor.to("cpu").contiguous() for name, tensor in policy_tensors(model)}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    base.config.save_pretrained(out)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(out)
    return out


class MergedPolicy:
    """A plain model that samples a LoRA policy from merged weights (``W + scaling * B @ A``).

    Sampling through peft's adapters runs two extra small matmuls (and a cast of the input to
    the fp32 adapters) for every adapted linear layer at every decode step, and the compiled
    decode compiles peft's wrappers too. This model is the base model's architecture with the
    base model's own parameters where nothing is adapted (embeddings, norms, biases: shared,
    no copy) and one buffer per adapted weight, refreshed in place from the adapters
    (:meth:`refresh`) whenever they changed since the last refresh; the training model is never
    merged in place, so its bf16 base weights never drift. The buffers keep their addresses,
    so a CUDA graph captured on this model stays valid across refreshes. Cost: one copy of
    the adapted weights (at Qwen2.5-1.5B with all-linear adapters about 2.6 GiB in bf16).
    """

    def __init__(self, peft_model):
        import torch

        base = peft_model.get_base_model()
        self.peft_model = peft_model
        with torch.device("meta"):
            plain = type(base)(base.config)
        self.pairs: list[tuple[object, object, object]] = []  # (buffer, base weight, layer)
        for name, param, layer in policy_parameters(peft_model):
            if layer is None:
                tensor = param
            else:
                tensor = torch.nn.Parameter(torch.empty_like(param), requires_grad=False)
                self.pairs.append((tensor, param, layer))
            _set(plain, name, tensor)
        for name, buf in base.named_buffers():
            _set(plain, name, buf, buffer=True)
        _copy_plain_tensors(plain, base)
        if getattr(base.config, "tie_word_embeddings", False):
            head, embed = plain.get_output_embeddings(), plain.get_input_embeddings()
            if head is not None and embed is not None:
                head.weight = embed.weight
        plain.generation_config = base.generation_config
        plain.eval()
        self.model = plain
        self._version: tuple[int, ...] | None = None

    @staticmethod
    def merged_bytes(peft_model) -> int:
        """Bytes of the copy: every adapted weight once."""
        return sum(p.numel() * p.element_size()
                   for _, p, layer in policy_parameters(peft_model) if layer is not None)

    def _adapter_version(self) -> tuple[int, ...]:
        # Every in-place update (the optimizer step) bumps a tensor's version counter.
        return tuple(p._version for n, p in self.peft_model.named_parameters() if "lora_" in n)

    def refresh(self) -> bool:
        """Merge the current adapters into the buffers if they changed; True if it did."""
        version = self._adapter_version()
        if version == self._version:
            return False
        import torch

        with torch.no_grad():
            for buffer, weight, layer in self.pairs:
                buffer.copy_(merged_weight(layer, weight))
        self._version = self._adapter_version()
        return True


def _set(model, name: str, tensor, *, buffer: bool = False) -> None:
    import torch

    owner, _, leaf = name.rpartition(".")
    module = model.get_submodule(owner) if owner else model
    if buffer:
        persistent = leaf not in getattr(module, "_non_persistent_buffers_set", set())
        module.register_buffer(leaf, tensor, persistent=persistent)
    elif isinstance(tensor, torch.nn.Parameter):
        module.register_parameter(leaf, tensor)
    else:
        module.register_parameter(leaf, torch.nn.Parameter(tensor, requires_grad=False))


def _copy_plain_tensors(plain, base) -> None:
    """Tensors kept as plain attributes (e.g. RoPE's ``original_inv_freq``) are still on the
    meta device after building on it: take the base model's."""
    import torch

    bases = dict(base.named_modules())
    for name, module in plain.named_modules():
        for key, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and value.is_meta and name in bases:
                setattr(module, key, getattr(bases[name], key))
