"""Peak GPU memory of the learner and of the vLLM server, from the shape and the trainer config.

Every number is bytes and comes from what the code holds (the modules are named beside each
term); docs/plan.md derives them. The learner's peak is the largest of its phases:

- ``rollout`` (transformers sampler on the training GPU): weights + optimizer state (gradients
  are freed by ``zero_grad`` after every step) + the sampler's generation batch;
- ``backward``: weights + optimizer state + gradients + the activations saved by the forward
  of one micro-batch + the largest transient of the backward (TRL's chunked LM-head backward,
  the recomputation of one checkpointed layer, or the embedding's dense gradient);
- ``step``: weights + optimizer state + gradients + the optimizer's own transient (the fp32
  gradient copies ``MasterWeightsAdamW`` makes before stepping).

The vLLM server takes ``gpu_memory_utilization`` of its GPU; what its weights, its profiling
forward and its CUDA graphs leave is KV cache (vLLM's own rule, ``vllm/v1/worker``).
Reads the trainer keys other issues add with ``getattr(config, name, default)``, so it works
with and without them: ``master_weights``, ``lora_r``/``lora_target_modules``,
``liger_kernels`` and ``generation_backend: vllm_shared``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mtgrpo.plan.shapes import ModelShape
from mtgrpo.rollout.policy_weights import merge_fits  # torch-free

GIB = 2 ** 30
# TRL 1.16's fused LM head (trl/kernels/chunked_logprob.py): tiles of TOKEN_CHUNK_SIZE tokens x
# _CHUNKED_LOGPROB_CHUNK_SIZE vocabulary entries (trl/trainer/utils.py).
TRL_TOKEN_CHUNK = 4096
TRL_VOCAB_CHUNK = 32768
# Rows the planner counts per sampler call. The sampler itself (mtgrpo/rollout/decode.py,
# plan_batch_size) takes as many rows as fit 90% of the free memory at the call, so a larger
# rollout may decode more rows at once in memory the learner has not claimed yet.
SAMPLER_BATCH = 16
# vLLM: KV block size on GPUs; memory outside its profile (CUDA graphs, NCCL, cuBLAS workspace),
# an allowance, not measured here.
VLLM_BLOCK_SIZE = 16
VLLM_OVERHEAD_BYTES = 1 * GIB
# What the allocator reserves beyond the peak it hands out (fragmentation) and the CUDA context
# outside the allocator, both added before comparing with a GPU's memory.
ALLOCATOR_SLACK = 0.05
CUDA_CONTEXT_BYTES = GIB // 2


@dataclass(frozen=True)
class Term:
    name: str
    bytes: int
    note: str = ""


@dataclass(frozen=True)
class Phase:
    name: str
    terms: tuple[Term, ...]

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.terms)


@dataclass(frozen=True)
class LearnerMemory:
    """The learner's per-GPU estimate: ``peak`` is what ``torch.cuda.max_memory_allocated``
    should read; ``required`` adds allocator slack and the CUDA context (compare with a GPU)."""

    phases: tuple[Phase, ...]
    precision: str  # how the optimizer keeps the weights: bf16, fp32, bf16_kahan, zero2, ...
    trainable_params: int
    lora: bool
    zero_stage: int
    world_size: int
    activations_checkpointed: int  # per micro-batch, with gradient checkpointing
    activations_full: int  # per micro-batch, without it
    rollout_rule: str

    @property
    def peak_phase(self) -> Phase:
        return max(self.phases, key=lambda p: p.bytes)

    @property
    def peak(self) -> int:
        return self.peak_phase.bytes

    @property
    def required(self) -> int:
        return int(self.peak * (1 + ALLOCATOR_SLACK)) + CUDA_CONTEXT_BYTES

    def term(self, name: str) -> int:
        for phase in self.phases:
            for t in phase.terms:
                if t.name == name:
                    return t.bytes
        return 0


@dataclass(frozen=True)
class VLLMMemory:
    budget: int  # gpu_memory_utilization x GPU memory
    weights: int
    activations: int  # vLLM's profiling forward and sampler warm-up
    overhead: int
    kv_bytes_per_token: int
    kv_cache: int
    kv_tokens: int
    num_gpu_blocks: int
    max_model_len: int
    concurrent_tokens: int  # what one step's generation batch can hold at once
    tensor_parallel: int

    @property
    def fits(self) -> bool:
        return self.kv_tokens >= self.max_model_len


# -- settings the other issues add ---------------------------------------------------------------

def setting(config: Any, name: str, default: Any) -> Any:
    """A trainer key that may not exist yet in this checkout (added by another issue)."""
    return getattr(config, name, default)


def lora_targets(config: Any, shape: ModelShape) -> list[str]:
    """The decoder-layer linear modules LoRA adapts (peft's ``all-linear`` = every one of them;
    it leaves the LM head out)."""
    text = str(setting(config, "lora_target_modules", "all-linear"))
    names = [part.strip() for part in text.split(",") if part.strip()]
    linears = shape.layer_linear_shapes()
    if not names or names == ["all-linear"]:
        return list(linears)
    return [n for n in names if n in linears]


def adapter_params(config: Any, shape: ModelShape) -> int:
    r = int(setting(config, "lora_r", 0) or 0)
    if r <= 0:
        return 0
    linears = shape.layer_linear_shapes()
    return shape.layers * sum(r * (linears[n][0] + linears[n][1])
                              for n in lora_targets(config, shape))


def resolve_master_weights(config: Any, *, zero_stage: int, trainable_bf16: int,
                           gpu_bytes: int) -> str:
    """The precision the optimizer keeps the weights in (``master_weights``).

    Without the key (before the learner issue's change) the optimizer is HF's AdamW over the
    bf16 model: ``bf16``. With it, the trainer's own rule (``mtgrpo.trainer.master_weights``,
    torch-free) when importable, else the same rule: fp32 under DeepSpeed; ``auto`` = fp32 when
    16 bytes per trainable parameter take at most half the GPU, else bf16_kahan.
    """
    value = setting(config, "master_weights", None)
    if value is None:
        return "bf16"
    if zero_stage:
        return "fp32"
    if trainable_bf16 == 0:
        return "fp32"  # LoRA: the adapters are fp32 already
    try:
        from mtgrpo.trainer.master_weights import resolve
    except ImportError:
        resolve = None  # type: ignore[assignment]  # the light install: no trainer package
    if resolve is not None:
        return resolve(value, weights_bf16=True, deepspeed_stage=0,
                       trainable_params=trainable_bf16, device_bytes=gpu_bytes).name
    if value == "auto":
        return "fp32" if 16 * trainable_bf16 <= 0.5 * gpu_bytes else "bf16_kahan"
    return str(value)


def liger_on(config: Any) -> bool:
    """Liger's kernels are counted only when the recipe says ``on``: ``auto`` depends on the
    image having liger-kernel, and counting without them over- (never under-) estimates."""
    return setting(config, "liger_kernels", "off") == "on"


# -- activations --------------------------------------------------------------------------------

def layer_activation_bytes(shape: ModelShape, dt: int, *, liger: bool = False,
                           lora: dict[str, int] | None = None) -> int:
    """Bytes per token one decoder layer saves for backward (no checkpointing), as autograd
    keeps them in transformers' Qwen2/Qwen3/Llama layers (tests/test_plan.py counts them with
    saved-tensor hooks): per RMSNorm its fp32 input, its rsqrt, the normalised bf16 tensor and
    the weighted output the next projections read (Liger's RMSNorm: input, rstd and output);
    q and k after RoPE, v, the attention output (the o projection's input) and its
    log-sum-exp; Qwen3's q/k norms (fp32 input, rsqrt, normalised); the MLP's gate, up,
    SiLU(gate) and product (Liger's SwiGLU recomputes the SiLU). The packed varlen path of
    fast_logprobs.py saves its contiguous q, k, v instead of the RoPE outputs: the same bytes.

    ``lora`` (adapted module name -> r): the frozen base saves no linear inputs and no
    normalised tensors (their weights need no gradient); each adapted linear saves the bf16
    copy of its input that autocast makes for its fp32 adapter, and the adapter's r outputs.
    """
    h, q, kv, i = shape.hidden, shape.q_dim, shape.kv_dim, shape.intermediate
    attention = dt * (q + 2 * kv) + dt * q + 4 * shape.heads
    if lora is not None:
        linears = shape.layer_linear_shapes()
        adapted = sum(dt * (linears[name][0] + r) for name, r in lora.items())
        qk_norm = (4 * (q + kv) + 4 * (shape.heads + shape.kv_heads)) if shape.qk_norm else 0
        return 2 * (4 * h + 4) + attention + qk_norm + 3 * dt * i + adapted
    norm = (2 * dt * h + 4) if liger else ((4 + 2 * dt) * h + 4)
    qk_norm = 0
    if shape.qk_norm:
        per_value = dt if liger else 4 + dt
        qk_norm = per_value * (q + kv) + 4 * (shape.heads + shape.kv_heads)
    mlp = (3 if liger else 4) * dt * i
    return 2 * norm + attention + qk_norm + mlp


def layer_backward_bytes(shape: ModelShape, dt: int) -> int:
    """Bytes per token of one layer's backward temporaries (gradients of the MLP's three
    intermediate-sized activations, and of the hidden state)."""
    return 3 * dt * shape.intermediate + 2 * dt * shape.hidden


def head_saved_bytes(shape: ModelShape, dt: int, *, liger: bool = False) -> int:
    """Per token, kept for backward above the decoder layers: the final norm's tensors, the
    hidden state TRL's chunked head saves, its log-normaliser, entropy and target."""
    norm = dt * shape.hidden + 4 if liger else (4 + dt) * shape.hidden + 4
    return norm + dt * shape.hidden + 3 * 4


def train_tokens(config: Any) -> int:
    """Tokens of one micro-batch, packed (fast_logprobs.py drops padding): every sequence at
    its longest, prompt plus completion."""
    return config.per_device_train_batch_size * (config.max_prompt_length
                                                 + config.max_completion_length)


# -- rollouts on the training GPU ---------------------------------------------------------------

def sampler_bytes(shape: ModelShape, config: Any, episodes: int, dt: int) -> tuple[int, str]:
    """Peak bytes of one TransformersSampler call beyond the weights, and which rule gave it.

    The sampler's own rule (``mtgrpo.rollout.decode.generation_bytes``, torch-free, so render
    on a light install counts the same).
    """
    batch = min(SAMPLER_BATCH, max(episodes, 1))
    new = config.max_tokens_per_turn
    context = config.max_prompt_length + config.max_completion_length
    width = max(context - new, 1)  # the last turn's prompt: everything before its tokens
    from mtgrpo.rollout import decode  # no torch, no httpx at import

    rule_shape = decode.ModelShape(
        layers=shape.layers, kv_heads=shape.kv_heads, head_dim=shape.head_dim,
        hidden=shape.hidden, intermediate=shape.intermediate, vocab=shape.vocab, itemsize=dt)
    return (int(decode.generation_bytes(rule_shape, batch, width, new)),
            "mtgrpo.rollout.decode.generation_bytes")


# -- the learner ---------------------------------------------------------------------------------

def learner_memory(shape: ModelShape, config: Any, *, world_size: int, gpu_bytes: int,
                   rollouts_on_gpu: bool) -> LearnerMemory:
    """The learner's per-GPU peak for this config at ``world_size`` processes."""
    dt = 2 if config.bf16 else 4
    stage = config.deepspeed_stage if world_size > 1 else 0
    n_gpu = max(world_size, 1)
    params = shape.params
    adapters = adapter_params(config, shape)
    lora = adapters > 0
    liger = liger_on(config)

    persistent: list[Term] = []
    grads: list[Term] = []
    step_extra: list[Term] = []
    if lora:
        precision = "fp32 adapters"
        persistent.append(Term("weights", params * dt, "frozen base model"))
        persistent.append(Term("adapters", adapters * 4, f"{adapters:,} LoRA params, fp32"))
        persistent.append(Term("optimizer", adapters * 8, "AdamW moments of the adapters, fp32"))
        linears = shape.layer_linear_shapes()
        merged = dt * shape.layers * sum(linears[n][0] * linears[n][1]
                                         for n in lora_targets(config, shape))
        if rollouts_on_gpu and merge_fits(merged, gpu_bytes):
            # the sampler's merged copy (policy_weights.MergedPolicy), kept between rollouts
            persistent.append(Term("merged policy", merged,
                                   "adapted weights merged for the sampler"))
        grads.append(Term("gradients", adapters * 4, "adapters only"))
    elif stage == 2:
        precision = "zero2 fp32 master"
        # DeepSpeed's estimate_zero2_model_states_mem_needs: bf16 weights whole (2 bytes/param)
        # + 18 bytes/param sharded (bf16 and fp32 gradients, fp32 master, Adam moments).
        persistent.append(Term("weights", params * dt, "bf16, whole on every GPU"))
        persistent.append(Term("optimizer", 16 * params // n_gpu,
                               f"fp32 master + Adam + fp32 grads, / {n_gpu} GPUs"))
        grads.append(Term("gradients", params * dt // n_gpu, f"bf16 partition, / {n_gpu} GPUs"))
    elif stage == 3:
        precision = "zero3 fp32 master"
        # DeepSpeed's estimate_zero3_model_states_mem_needs: 18 bytes/param sharded + the
        # largest layer gathered (4 bytes/param).
        persistent.append(Term("weights", params * dt // n_gpu, f"bf16 shard, / {n_gpu} GPUs"))
        persistent.append(Term("optimizer", 16 * params // n_gpu,
                               f"fp32 master + Adam + fp32 grads, / {n_gpu} GPUs"))
        persistent.append(Term("gathered layer", 4 * shape.largest_layer_params,
                               "the largest module gathered whole"))
    else:
        precision = resolve_master_weights(config, zero_stage=0, trainable_bf16=params,
                                           gpu_bytes=gpu_bytes) if dt == 2 else "fp32"
        persistent.append(Term("weights", params * dt, "bf16" if dt == 2 else "fp32"))
        state = {"bf16": 4, "fp32": 12, "bf16_kahan": 6}.get(precision, 12) if dt == 2 else 8
        what = {"bf16": "bf16 Adam moments (updates below half a bf16 step are lost)",
                "fp32": "fp32 master + fp32 Adam moments",
                "bf16_kahan": "bf16 Adam moments + bf16 Kahan compensation"}.get(
            precision, "fp32 Adam moments")
        persistent.append(Term("optimizer", state * params, what))
        grads.append(Term("gradients", params * dt, ""))
        if precision == "fp32" and dt == 2:
            step_extra.append(Term("fp32 gradient copies", 4 * params,
                                   "MasterWeightsAdamW.step casts every gradient first"))
    if config.beta > 0 and not lora:
        persistent.append(Term("reference model", params * dt // (n_gpu if stage == 3 else 1),
                               "beta > 0"))

    # Activations of one micro-batch.
    tokens = train_tokens(config)
    r = int(setting(config, "lora_r", 0) or 0)
    per_layer = layer_activation_bytes(
        shape, dt, liger=liger,
        lora={name: r for name in lora_targets(config, shape)} if lora else None)
    head = head_saved_bytes(shape, dt, liger=liger)
    full = tokens * (shape.layers * per_layer + head)
    checkpointed = tokens * (shape.layers * dt * shape.hidden + head)
    saved = checkpointed if config.gradient_checkpointing else full
    head_trainable = not lora
    head_transient = (tokens * shape.hidden * (4 + dt)  # grad_hidden fp32 and its cast
                      + min(tokens, TRL_TOKEN_CHUNK) * TRL_VOCAB_CHUNK * dt
                      + (shape.embedding_params * (4 + dt) if head_trainable else 0))
    recompute = tokens * (per_layer + layer_backward_bytes(shape, dt)) \
        if config.gradient_checkpointing else tokens * layer_backward_bytes(shape, dt)
    embedding_grad = shape.embedding_params * dt if head_trainable else 0
    transient, which = max((head_transient, "LM-head backward (TRL's chunked head)"),
                           (recompute, "one layer recomputed + its backward"),
                           (embedding_grad, "the embedding's dense gradient"))

    phases = [
        Phase("backward", tuple(persistent + grads + [
            Term("activations", saved, f"{tokens} tokens, checkpointing "
                                       f"{'on' if config.gradient_checkpointing else 'off'}"),
            Term("backward transient", transient, which)])),
        Phase("step", tuple(persistent + grads + step_extra)),
    ]
    rule = "none (vLLM samples)"
    if rollouts_on_gpu:
        episodes = config.per_device_train_batch_size * config.gradient_accumulation_steps
        gen, rule = sampler_bytes(shape, config, episodes, dt)
        gathered = []
        if stage == 3:  # MTGRPOTrainer._live_policy_generation gathers the whole policy
            gathered = [Term("gathered policy", params * dt, "ZeRO-3 rollout gathers weights")]
        phases.insert(0, Phase("rollout", tuple(persistent + gathered + [
            Term("generation batch", gen, rule)])))
    return LearnerMemory(
        phases=tuple(phases), precision=precision,
        trainable_params=adapters if lora else params, lora=lora, zero_stage=stage,
        world_size=n_gpu, activations_checkpointed=checkpointed, activations_full=full,
        rollout_rule=rule)


# -- the vLLM server ---------------------------------------------------------------------------

def vllm_defaults(gpu_bytes: int, gpu_name: str) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) vLLM's API server picks for this GPU
    (vllm/engine/arg_utils.py, ``_set_default_args``)."""
    if gpu_bytes >= 160 * GIB:
        return 16384, 1024
    if gpu_bytes >= 70 * GIB and "a100" not in gpu_name.lower():
        return 8192, 1024
    return 2048, 256


def vllm_memory(shape: ModelShape, config: Any, *, gpu_bytes: int, gpu_name: str,
                tensor_parallel: int, concurrent_sequences: int,
                max_model_len: int | None = None,
                utilization: float | None = None) -> VLLMMemory:
    """The vLLM server's memory on one of its GPUs (``utilization``: the share the launcher
    passes, default ``vllm_gpu_memory_utilization``)."""
    tp = max(tensor_parallel, 1)
    budget = int((utilization or config.vllm_gpu_memory_utilization) * gpu_bytes)
    weights = shape.params * 2 // tp  # --dtype bfloat16 (launcher)
    batched, seqs = vllm_defaults(gpu_bytes, gpu_name)
    per_token = 2 * (4 * shape.hidden + shape.q_dim + 2 * shape.kv_dim
                     + 3 * shape.intermediate) // tp
    activations = batched * per_token + 3 * 4 * seqs * shape.vocab
    kv_per_token = shape.kv_bytes_per_token(2) // tp
    kv = max(budget - weights - activations - VLLM_OVERHEAD_BYTES, 0)
    blocks = kv // (VLLM_BLOCK_SIZE * kv_per_token)
    model_len = max_model_len or shape.max_position
    concurrent = concurrent_sequences * (config.max_prompt_length + config.max_completion_length)
    return VLLMMemory(budget=budget, weights=weights, activations=activations,
                      overhead=VLLM_OVERHEAD_BYTES, kv_bytes_per_token=kv_per_token,
                      kv_cache=kv, kv_tokens=blocks * VLLM_BLOCK_SIZE, num_gpu_blocks=blocks,
                      max_model_len=model_len, concurrent_tokens=concurrent,
                      tensor_parallel=tp)


def kv_blocks(kv_cache_bytes: int, shape: ModelShape, block_size: int, dtype_bytes: int = 2
              ) -> int:
    """vLLM's block count for a KV cache of ``kv_cache_bytes`` (one attention group, every
    layer full attention): bytes // (layers x page size of one block)."""
    return kv_cache_bytes // (block_size * shape.kv_bytes_per_token(dtype_bytes))
