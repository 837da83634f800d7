"""Liger's Triton kernels in the policy (trainer key ``liger_kernels``).

``liger_kernel.transformers._apply_liger_kernel_to_instance`` (what transformers' own
``use_liger_kernel`` calls; liger-kernel is pinned for it) swaps the model family's RoPE,
RMSNorm and SwiGLU/GeGLU for Liger's kernels, on the instance and in the family's module (so
another model of that family built later in the process gets them too). Measured on an H200 at
the Qwen3-1.7B shape: a third less step time and 27% less peak memory (docs/performance.md).

What is never turned on: Liger's cross-entropy and fused linear cross-entropy. The latter
replaces the model's ``forward``, and with it TRL's fused LM head, which both the packed
log-prob path (fast_logprobs.py) and TRL's own path score tokens with.

Rollouts from the live policy (``generation_backend: transformers``) sample with the model's
own transformers kernels, not Liger's. The compiled decoder (``sampler_compile``) cannot trace
Liger's Triton kernels (dynamo's kernel analysis fails on them and the decode falls apart: on
an H200, ``benchmarks/sampler_gpu.py`` at the Qwen2.5-1.5B shape sampled 16 x 256 tokens in
7.08 s with Liger's kernels against 0.89 s without, and a GPU job at the Qwen3-1.7B shape spent
8-16 s per such rollout), and a one-token decode step gains nothing from them. ``apply``
records what it replaced (``KernelSwap``: the instance ``forward`` methods, the family
module's functions and classes, class ``forward`` methods) and ``sampling_kernels(model)`` puts
the originals back for the duration of a rollout. The learner scores every token again with
Liger's kernels, so the two differ only by bf16 rounding between two implementations of the
same ops, as vLLM and the learner do.

Order with LoRA: the kernels replace the forward of the norm and MLP modules, which still call
their (LoRA-wrapped or not) linear layers; apply them to the base model, before or after peft
wraps it (``apply`` unwraps a PeftModel itself).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from mtgrpo.errors import Problem, UserError

logger = logging.getLogger(__name__)

# The layer kernels asked for; each family's apply function takes the ones it has.
LAYER_KERNELS = ("rope", "rms_norm", "swiglu", "geglu", "layer_norm")
NEVER = {"cross_entropy": False, "fused_linear_cross_entropy": False}


def unavailable_reason(*, cuda: bool) -> str | None:
    """Why Liger cannot run here, or None when it can."""
    if not cuda:
        return "no CUDA device (Liger's kernels are Triton GPU kernels)"
    if importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel is not installed (pip install 'mtgrpo[trainer]' or the GPU image)"
    return None


def resolve(setting: str, *, cuda: bool) -> bool:
    """Whether to apply the kernels; ``on`` where they cannot run is a one-line UserError."""
    if setting == "off":
        return False
    reason = unavailable_reason(cuda=cuda)
    if setting == "on" and reason:
        raise UserError(Problem("", "trainer.liger_kernels", f"on, but {reason}",
                                "auto (on where available) or off"))
    return reason is None


def apply(model, *, required: bool = False) -> list[str]:
    """Apply Liger's layer kernels to ``model``; the kernel names applied ([] when Liger has
    none for its family: a UserError instead when ``required``)."""
    from liger_kernel.transformers import monkey_patch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    fn = monkey_patch.MODEL_TYPE_TO_APPLY_LIGER_FN.get(model_type)
    if fn is None:
        if required:
            raise UserError(Problem("", "trainer.liger_kernels",
                                    f"on, but Liger has no kernels for model type {model_type!r}",
                                    "auto or off for this model"))
        logger.info("liger kernels: none for model type %r", model_type)
        return []
    accepted = inspect.signature(fn).parameters
    kernels = [k for k in LAYER_KERNELS if k in accepted]
    kwargs = {k: v for k, v in NEVER.items() if k in accepted}
    before = _Snapshot.of(base)
    monkey_patch._apply_liger_kernel_to_instance(model=base, **{k: True for k in kernels},
                                                 **kwargs)
    base.mtgrpo_kernel_swap = before.swap_to(base)
    return kernels


@dataclass
class KernelSwap:
    """What ``apply`` replaced, to run the model with its own kernels for a while."""

    instance: list[tuple[Any, Any]] = field(default_factory=list)  # (module, Liger's forward)
    attrs: list[tuple[Any, str, Any, Any]] = field(default_factory=list)  # (owner, name, old, new)

    @contextlib.contextmanager
    def original(self):
        for module, _ in self.instance:
            module.__dict__.pop("forward", None)  # the class's (transformers') forward again
        for owner, name, old, _ in self.attrs:
            setattr(owner, name, old)
        try:
            yield
        finally:
            for module, patched in self.instance:
                module.__dict__["forward"] = patched
            for owner, name, _, new in self.attrs:
                setattr(owner, name, new)


@dataclass
class _Snapshot:
    forwards: set[int]  # ids of modules with an instance forward before apply
    namespaces: dict[Any, dict[str, Any]]  # family modeling module -> its globals
    class_forwards: dict[type, Any]

    @classmethod
    def of(cls, model) -> "_Snapshot":
        modules = list(model.modules())
        classes = {type(m) for m in modules}
        namespaces = {sys.modules[c.__module__] for c in classes
                      if c.__module__.startswith("transformers.models.")}
        return cls({id(m) for m in modules if "forward" in m.__dict__},
                   {ns: dict(vars(ns)) for ns in namespaces},
                   {c: c.__dict__.get("forward") for c in classes})

    def swap_to(self, model) -> KernelSwap:
        swap = KernelSwap()
        for m in model.modules():
            if "forward" in m.__dict__ and id(m) not in self.forwards:
                swap.instance.append((m, m.__dict__["forward"]))
        for ns, old in self.namespaces.items():
            for name, value in vars(ns).items():
                if name in old and old[name] is not value:
                    swap.attrs.append((ns, name, old[name], value))
        for c, old in self.class_forwards.items():
            if old is not None and c.__dict__.get("forward") is not old:
                swap.attrs.append((c, "forward", old, c.__dict__.get("forward")))
        return swap


def sampling_kernels(model):
    """A context in which ``model`` runs its own transformers kernels instead of Liger's; a
    no-op for a model ``apply`` never touched. A PeftModel finds the swap on its base model
    through its own attribute lookup."""
    swap = getattr(model, "mtgrpo_kernel_swap", None)
    return swap.original() if isinstance(swap, KernelSwap) else contextlib.nullcontext()
