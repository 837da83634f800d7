"""The transformers sampler's decoding loop: batched, stop checks on the device, no logits kept.

``decode_batch`` samples continuations of left-padded prompts with the model's own forward and
KV cache, one token per step for every row:

- sampling is transformers' own (``TemperatureLogitsWarper``, ``TopPLogitsWarper``, softmax,
  ``torch.multinomial``; ``argmax`` at temperature 0), from a private ``torch.Generator``;
- a row ends at an EOS id, at a stop string (``StopTables``, on token ids) or at its own
  budget; later tokens of a finished row are padding and are dropped;
- the sampled token's log-prob, ``log_softmax(logits / temperature)`` (TRL's quantity), is
  computed step by step only when asked for: no step's full-vocabulary logits outlive it;
- the prefill computes the LM head for the last position only (``logits_to_keep=1``);
- the host never waits for the device inside the loop: "every row has finished" is copied to
  pinned memory asynchronously and read one step later (on CUDA), so the loop runs at most one
  step more than needed;
- ``cache="static"`` uses a ``StaticCache`` (fixed shapes, reused between calls of the same
  shape) and ``compile=True`` compiles the one-token forward with
  ``torch.compile(mode="reduce-overhead")`` (CUDA graphs); both are measured by
  ``benchmarks/sampler_gpu.py``.

``generation_bytes`` is the memory rule the sampler sizes its batches with (docs/rollouts.md).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

# Full-vocabulary float32 rows live per batch row during one step: the logits, the
# temperature-scaled scores, top-p's sorted copy and its int64 indices (2 rows), its cumulative
# probabilities and mask, the probabilities, and the log-softmax when log-probs are asked for.
LOGIT_ROWS = 8
# Static caches kept between calls (each a whole KV cache of its shape): a rollout's turns come
# in a few shapes (rows x length buckets), and a compiled graph is bound to its cache's memory.
STATIC_CACHES = 4


@dataclass(frozen=True)
class ModelShape:
    """What the memory rule needs to know about a model."""

    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    itemsize: int  # bytes per activation / cache element (2 for bf16)

    @classmethod
    def of(cls, model) -> "ModelShape":
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") \
            else model.config
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        param = next(model.parameters())
        return cls(layers=config.num_hidden_layers,
                   kv_heads=getattr(config, "num_key_value_heads", None) or heads,
                   head_dim=head_dim, hidden=config.hidden_size,
                   intermediate=getattr(config, "intermediate_size", 4 * config.hidden_size),
                   vocab=config.vocab_size, itemsize=param.element_size())

    @property
    def kv_bytes_per_token(self) -> int:
        """Keys and values of every layer for one token."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.itemsize

    @property
    def prefill_bytes_per_token(self) -> int:
        """Live activations of one layer's forward for one prompt token (no grad): the residual
        stream, the normed input, q/k/v and attention output (about 4 hidden-sized rows) and the
        MLP's gate, up and product (3 intermediate-sized rows)."""
        return (4 * self.hidden + 3 * self.intermediate) * self.itemsize


def generation_bytes(shape: ModelShape, batch: int, prompt_width: int, new_tokens: int) -> int:
    """Bytes one ``decode_batch`` call holds at its peak, beyond the weights:

        batch * (prompt_width + new_tokens) * kv_bytes_per_token      (the KV cache)
      + batch * prompt_width * prefill_bytes_per_token                 (prefill activations)
      + batch * vocab * 4 * LOGIT_ROWS                                 (one step's logits work)

    The planner may replace this rule; ``plan_batch_size`` takes it as an argument.
    """
    return (batch * (prompt_width + new_tokens) * shape.kv_bytes_per_token
            + batch * prompt_width * shape.prefill_bytes_per_token
            + batch * shape.vocab * 4 * LOGIT_ROWS)


def plan_batch_size(shape: ModelShape, prompts: int, prompt_width: int, new_tokens: int,
                    budget_bytes: int | None, *, rule=generation_bytes) -> int:
    """The most rows (at most ``prompts``) whose ``rule`` bytes fit ``budget_bytes``; at least
    1. ``None`` = no limit: all prompts in one call."""
    if budget_bytes is None:
        return max(1, prompts)
    per_row = rule(shape, 1, prompt_width, new_tokens)
    return max(1, min(prompts, budget_bytes // max(1, per_row)))


def free_device_bytes(device, fraction: float = 0.9) -> int | None:
    """What a decode call may use on ``device``: ``fraction`` of the memory CUDA reports free
    plus what PyTorch's allocator holds unused; ``None`` on CPU (no limit)."""
    import torch

    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    spare = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(fraction * (free + spare))


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, width: int | None = None):
    """(ids, mask) as int64 tensors of shape ``(len(prompts), width)``, prompts right-aligned."""
    import torch

    width = width or max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        if p:
            ids[row, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[row, width - len(p):] = 1
    return ids, mask


@dataclass
class Decoded:
    """``tokens[b, :lengths[b]]`` are row ``b``'s kept tokens; ``reasons[b]``: 1 EOS, 2 stop
    string, 3 budget; ``logprobs`` is None unless asked for."""

    tokens: object
    lengths: object
    reasons: object
    logprobs: object | None
    mask: object = None  # static cache: which of its columns hold each row's tokens
    end: int = 0  # static cache: columns written (the next call's tokens go after them)
    fed: int = 0  # decode steps whose sampled token went into the cache


class Decoder:
    """Holds what outlives one call: static caches and the compiled one-token forward."""

    def __init__(self, *, cache: str = "dynamic", compile: bool = False):
        if cache not in ("dynamic", "static"):
            raise ValueError(f"cache must be 'dynamic' or 'static', got {cache!r}")
        if compile and cache != "static":
            raise ValueError("compile=True needs cache='static' (fixed shapes)")
        self.cache = cache
        self.compile = compile
        self._static: OrderedDict[tuple, object] = OrderedDict()
        self._compiled = {}
        self.shapes: set[tuple[int, int]] = set()  # (rows, cache length) of every static call

    def _cache_for(self, model, batch: int, length: int, *, reset: bool = True):
        from transformers import DynamicCache, StaticCache

        if self.cache == "dynamic":
            return DynamicCache(config=model.config)
        key = (id(model), batch, length)
        cache = self._static.pop(key, None)
        if cache is not None and not reset:
            self._static[key] = cache
            return cache
        if cache is None:
            while len(self._static) >= STATIC_CACHES:
                self._static.popitem(last=False)  # the least recently used shape
            cache = StaticCache(config=model.config, max_cache_len=length)
        else:
            cache.reset()
        self._static[key] = cache
        return cache

    def _step_forward(self, model):
        if not self.compile:
            return model
        fn = self._compiled.get(id(model))
        if fn is None:
            import torch

            # One graph per (rows, cache length) bucket: more than dynamo's default 8.
            for name in ("recompile_limit", "cache_size_limit"):
                if getattr(torch._dynamo.config, name, 64) < 64:
                    setattr(torch._dynamo.config, name, 64)
            fn = self._compiled[id(model)] = torch.compile(
                model.forward, mode="reduce-overhead", fullgraph=False, dynamic=False)
        return fn

    def decode(self, model, ids, mask, budgets, *, eos_ids: Sequence[int], pad_id: int,
               temperature: float, top_p: float, stops=None, logprobs: bool = False,
               generator=None, length_multiple: int = 1,
               cache_length: int | None = None, resume=None) -> Decoded:
        """Sample up to ``max(budgets)`` tokens for every row of ``ids`` (see the module doc).

        ``cache_length``: the static cache's length whenever the call fits in it (one shape,
        one compiled graph, for every turn of a job); longer calls round up to
        ``length_multiple``.

        ``resume = (perm, prefix_mask)`` (static cache of ``cache_length``, see
        ``TransformersSampler``): the cache already holds earlier tokens of every row in its
        first ``prefix_mask.shape[1]`` columns (``prefix_mask`` marks them, after the rows are
        reordered by ``perm``); ``ids``/``mask`` are only the rows' new tokens, prefilled after
        them. Nothing before is computed again."""
        import torch
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        device = ids.device
        batch, width = ids.shape
        steps = int(max(budgets))
        total = width + steps
        if cache_length and cache_length >= total:
            total = cache_length
        elif length_multiple > 1:  # static shapes: fewer distinct cache lengths, fewer compiles
            total = -(-total // length_multiple) * length_multiple
        greedy = temperature <= 0
        warpers = LogitsProcessorList()
        if not greedy:
            if temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(temperature))
            if top_p < 1.0:
                warpers.append(TopPLogitsWarper(top_p))

        start = 0
        before = None  # tokens each row already has in the cache
        if resume is not None:
            perm, prefix = resume
            start = prefix.shape[1]
            before = prefix.sum(-1, keepdim=True)
            total = cache_length
        full_mask = torch.ones((batch, total), dtype=mask.dtype, device=device)
        if resume is not None:
            full_mask[:, :start] = prefix
        full_mask[:, start:start + width] = mask
        positions = mask.sum(-1, keepdim=True) - 1  # last prompt position per row
        prompt_positions = (mask.cumsum(-1) - 1).clamp(min=0)
        if before is not None:
            positions = positions + before
            prompt_positions = prompt_positions + before
        cache_positions = torch.arange(total, device=device)
        budget_t = torch.as_tensor(list(budgets), device=device)
        eos_t = torch.as_tensor(sorted(set(eos_ids)) or [-1], device=device)
        tokens = torch.full((batch, steps), pad_id, dtype=torch.long, device=device)
        lengths = torch.zeros(batch, dtype=torch.long, device=device)
        reasons = torch.zeros(batch, dtype=torch.long, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        lps = torch.zeros((batch, steps), dtype=torch.float32, device=device) if logprobs else None
        state = stops.initial_state(batch, device) if stops is not None and len(stops) else None
        cache = self._cache_for(model, batch, total, reset=resume is None)
        if resume is not None:  # the rows in this call's order; addresses kept (CUDA graphs)
            for layer in cache.layers:
                layer.keys.copy_(layer.keys.index_select(0, perm))
                layer.values.copy_(layer.values.index_select(0, perm))
        dynamic = self.cache == "dynamic"
        if not dynamic:
            self.shapes.add((batch, total))
        pinned = device.type == "cuda"
        flags = [torch.zeros((), dtype=torch.bool, pin_memory=pinned) for _ in range(2)]
        events = [None, None]

        # Without padding, no mask at all: transformers checks a given mask's contents on the
        # host (``padding_mask.all()``) in every forward, a device sync per token.
        padded = resume is not None or bool((mask == 0).any())

        def attention(length: int):
            if not padded:
                return None
            return full_mask[:, :length] if dynamic else full_mask

        out = model(input_ids=ids, attention_mask=attention(start + width),
                    position_ids=prompt_positions, past_key_values=cache,
                    cache_position=cache_positions[start:start + width], use_cache=True,
                    logits_to_keep=1)
        forward = self._step_forward(model)
        base = start + width  # the first decode step's column
        fed = 0  # decode steps whose token went into the cache
        for t in range(steps):
            # A copy: a CUDA-graph replay overwrites its outputs, and fp32 .float() would alias.
            logits = out.logits[:, -1].to(torch.float32, copy=True)
            del out
            if greedy:
                nxt = logits.argmax(-1)
            else:
                probs = torch.softmax(warpers(None, logits), dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            nxt = torch.where(done, pad_id, nxt)
            tokens[:, t] = nxt
            if lps is not None:
                scaled = logits if greedy else logits / temperature
                lps[:, t] = torch.log_softmax(scaled, -1).gather(-1, nxt[:, None]).squeeze(1)
            # Why the row ends here, if it does: EOS first, then a stop string, then the budget.
            why = torch.where(torch.isin(nxt, eos_t), 1, 0)
            if state is not None:
                state, hit = stops.step(state, nxt)
                why = torch.where((why == 0) & hit, 2, why)
            why = torch.where((why == 0) & (budget_t <= t + 1), 3, why)
            ending = ~done & (why > 0)
            lengths = torch.where(ending, t + 1, lengths)
            reasons = torch.where(ending, why, reasons)
            done = done | ending
            if t + 1 == steps:
                break
            # The stop decision of step t - 1 (copied asynchronously) decides whether to go on.
            slot = t % 2
            flags[slot].copy_(done.all(), non_blocking=pinned)
            if pinned:
                events[slot] = torch.cuda.Event()
                events[slot].record()
                prev = events[1 - slot]
                if prev is not None:
                    prev.synchronize()
                    if bool(flags[1 - slot]):
                        break
            elif bool(flags[slot]):
                break
            pos = cache_positions[base + t:base + t + 1]
            out = forward(input_ids=nxt[:, None], position_ids=positions + t + 1,  # noqa: F841
                          attention_mask=attention(base + t + 1),
                          past_key_values=cache, cache_position=pos, use_cache=True)
            fed = t + 1
        lengths = torch.where(lengths == 0, steps, lengths)  # (only if the loop ended early)
        if dynamic:
            return Decoded(tokens, lengths, reasons, lps)
        # What the cache now holds per row: its earlier tokens, the new ones, and the sampled
        # tokens that were fed back (not a finished row's padding, nor the very last token).
        kept = torch.arange(fed, device=device)[None, :] < lengths[:, None]
        full_mask[:, base:base + fed] = kept.to(full_mask.dtype)
        return Decoded(tokens, lengths, reasons, lps, full_mask[:, :base + fed], base + fed, fed)
