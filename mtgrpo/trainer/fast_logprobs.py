"""Padding-free per-token log-probabilities for TRL 1.16's ``GRPOTrainer``.

TRL 1.16 already scores tokens without materialising the ``(batch, seq, vocab)`` logits: its
``add_fused_lm_head`` patch runs the LM head in tiles through ``trl.kernels.ChunkedLogProbFunction``
(online log-sum-exp in Triton, chunked backward). What it still wastes is padding: a GRPO batch is
``prompt (left-padded) + completion (right-padded)``, and multi-turn episodes differ a lot in length,
so a third or more of every forward and backward (and of the activations kept for backward) can be
pad tokens.

``ChunkedLogprobsMixin`` overrides ``GRPOTrainer._get_per_token_logps_and_entropies``: it removes
the padding, packs the sequences of a micro-batch into one row (positions restart at 0 for each
sequence), runs the decoder with variable-length causal attention (``torch.nn.attention.varlen``,
i.e. FlashAttention with ``cu_seqlens``; a per-sequence SDPA loop where that kernel is missing),
scores the completion tokens through TRL's own fused, chunked LM head (same temperature, softcap,
fp32-head option, entropy on request), and scatters the results back to TRL's padded
``(B, logits_to_keep)`` layout: zeros at padding, exactly as TRL returns them. Backward stays
chunked because it is TRL's chunked autograd function.

Anything the packed path does not cover falls back to TRL's own method: multimodal inputs, MoE
auxiliary loss, attention masks with holes, sliding-window or eager attention, and models that TRL
did not patch with its fused head. A batch without any padding also takes TRL's path: there is
nothing to remove, and packing costs about 5% there (H200, see benchmarks/RESULTS.md).

Put the mixin first in the trainer's bases::

    class MTGRPOTrainer(ChunkedLogprobsMixin, GRPOTrainer): ...
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
import torch.nn.functional as F

PACKED_ATTENTION = "mtgrpo_packed_sdpa"
# Attention implementations that read ``cu_seq_lens_*`` themselves (transformers' flash paths).
_NATIVE_VARLEN = ("flash_attention_2", "flash_attention_3")

try:  # torch >= 2.10: FlashAttention over packed sequences
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn

    _VARLEN_PARAMS = set(inspect.signature(_varlen_attn).parameters)
except ImportError:  # pragma: no cover - older torch
    _varlen_attn = None
    _VARLEN_PARAMS = set()


def _per_sequence_sdpa(q, k, v, cu_seqlens, scale):
    """Causal attention of each packed sequence on its own; q (N, Hq, D), k/v (N, Hkv, D)."""
    out = torch.empty_like(q)
    groups = q.shape[1] // k.shape[1]
    bounds = cu_seqlens.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end == start:
            continue
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))
        if groups > 1:
            ks, vs = ks.repeat_interleave(groups, 0), vs.repeat_interleave(groups, 0)
        out[start:end] = F.scaled_dot_product_attention(
            qs, ks, vs, is_causal=True, scale=scale).transpose(0, 1)
    return out


# Why the FlashAttention varlen kernel is not used, once a call has failed (e.g. an old GPU).
_varlen_unusable: str | None = None


def attention_backend(device_type: str = "cuda") -> str:
    """Which kernel packed attention uses on ``device_type``: ``varlen_attn`` or ``sdpa per sequence``."""
    if _varlen_attn is not None and device_type == "cuda" and _varlen_unusable is None:
        return "varlen_attn"
    return "sdpa per sequence"


def varlen_causal_attention(q, k, v, cu_seqlens, max_len: int, scale: float | None):
    """Causal attention over sequences packed along dim 0 (``cu_seqlens``: int32 boundaries).

    q is (N, Hq, D), k and v are (N, Hkv, D) with Hq a multiple of Hkv; returns (N, Hq, D).
    """
    global _varlen_unusable
    if attention_backend(q.device.type) != "varlen_attn":
        return _per_sequence_sdpa(q, k, v, cu_seqlens, scale)
    try:
        return _flash_varlen(q, k, v, cu_seqlens, max_len, scale)
    except (RuntimeError, NotImplementedError) as exc:  # kernel not built for this GPU or dtype
        _varlen_unusable = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        warnings.warn(f"varlen_attn unusable ({_varlen_unusable}); packed attention runs SDPA "
                      "per sequence, which is slower", RuntimeWarning, stacklevel=2)
        return _per_sequence_sdpa(q, k, v, cu_seqlens, scale)


def _flash_varlen(q, k, v, cu_seqlens, max_len, scale):
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    kwargs: dict[str, Any] = {"scale": scale}
    if "window_size" in _VARLEN_PARAMS:
        kwargs["window_size"] = (-1, 0)  # causal, torch >= 2.11
    else:
        kwargs["is_causal"] = True  # torch 2.10
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        if "enable_gqa" in _VARLEN_PARAMS:
            kwargs["enable_gqa"] = True
        else:
            k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    return _varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, **kwargs)


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                          cu_seq_lens_q=None, max_length_q=None, **kwargs):
    """transformers attention function: SDPA, or packed varlen attention when ``cu_seq_lens_q`` is given.

    Registered as ``PACKED_ATTENTION``. Without the packing kwargs it is transformers' own SDPA
    (generation, reference model, anything else), so switching a model to it changes nothing else.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if cu_seq_lens_q is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if query.shape[0] != 1 or dropout or kwargs.get("sliding_window"):
        raise ValueError("packed attention takes one packed row, no dropout, no sliding window")
    # (1, H, N, D) -> (N, H, D)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
    out = varlen_causal_attention(q, k, v, cu_seq_lens_q, int(max_length_q), scaling)
    return out.unsqueeze(0), None


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_attention)
    # Masks for unpacked calls are built exactly as for "sdpa".
    AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)


def has_fused_lm_head(model) -> bool:
    """Whether ``model.forward`` is (or wraps) TRL's ``add_fused_lm_head`` forward.

    Accelerate wraps the forward for mixed precision (autocast, outputs to fp32) when it prepares
    the model for training, so the wrappers are followed through ``__wrapped__``.
    """
    fn = model.forward
    for _ in range(16):
        fn = getattr(fn, "__func__", fn)
        code = getattr(fn, "__code__", None)
        if code is not None and "fused_lm_head" in code.co_varnames:
            return True
        fn = getattr(fn, "__wrapped__", None)
        if fn is None:
            return False
    return False


def prepare_model_for_packing(model) -> bool:
    """Make ``model`` (unwrapped) able to run packed sequences; False if it cannot.

    An SDPA model is switched to ``PACKED_ATTENTION`` (identical to SDPA unless packing kwargs are
    passed), flash-attention models already read ``cu_seq_lens_*``. The switch is permanent on
    purpose: under gradient checkpointing the decoder layers run again during backward and must
    still see packed attention.
    """
    config = getattr(model, "config", None)
    if config is None or not has_fused_lm_head(model):
        return False  # not a transformers model patched by TRL's add_fused_lm_head
    text_config = config.get_text_config()
    if config is not text_config or set(getattr(text_config, "layer_types", None)
                                        or ["full_attention"]) != {"full_attention"}:
        return False  # multimodal or sliding-window models: TRL's path
    impl = config._attn_implementation
    if impl in _NATIVE_VARLEN or impl == PACKED_ATTENTION:
        return True
    if impl != "sdpa":
        return False
    _register_attention()
    model.set_attn_implementation(PACKED_ATTENTION)
    return config._attn_implementation == PACKED_ATTENTION


def contiguous_rows(attention_mask: torch.Tensor) -> bool:
    """True when every row's mask is one run of ones (left and right padding only, no holes)."""
    m = attention_mask.to(torch.int8)
    starts = (m[:, 1:] > m[:, :-1]).sum(1) + m[:, 0]
    return bool((starts <= 1).all())


def pack_rows(input_ids, attention_mask, logits_to_keep: int):
    """Pack the unpadded rows into one row; returns the model kwargs and the keep mask.

    ``shift_labels[i]`` is the next token of packed position ``i`` when that token is a real
    completion token, else -100: the same tokens TRL scores (its labels are the input ids with
    padding and the prompt set to -100, shifted by one).
    """
    keep = attention_mask.bool()
    lengths = keep.sum(1)
    labels = input_ids.masked_fill(~keep, -100)
    labels[:, : labels.shape[1] - logits_to_keep] = -100
    shifted = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), -100)], dim=1)
    cu = torch.zeros(lengths.numel() + 1, dtype=torch.int32, device=input_ids.device)
    cu[1:] = lengths.cumsum(0)
    max_len = int(lengths.max())
    kwargs = {
        "input_ids": input_ids[keep].unsqueeze(0),
        "position_ids": (keep.long().cumsum(1) - 1)[keep].unsqueeze(0),
        "shift_labels": shifted[keep].unsqueeze(0),
        "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
        "max_length_q": max_len, "max_length_k": max_len,
    }
    return kwargs, keep


def unpack(values: torch.Tensor, keep: torch.Tensor, logits_to_keep: int) -> torch.Tensor:
    """Packed per-position values (1, N) back to TRL's (B, logits_to_keep), zeros at padding.

    Position j of a row scores token j + 1, so the completion tokens' values sit in columns
    ``L - 1 - logits_to_keep .. L - 2`` (TRL's ``log_probs[:, -logits_to_keep:]`` of a (B, L-1) tensor).
    """
    # masked_scatter keeps the result connected to ``values`` (and so to the model) for backward
    full = values.new_zeros(keep.shape).masked_scatter(keep, values[0])
    width = keep.shape[1]
    return full[:, width - 1 - logits_to_keep: width - 1]


class ChunkedLogprobsMixin:
    """Padding-free ``_get_per_token_logps_and_entropies`` for ``GRPOTrainer`` subclasses.

    Same signature, same returned shapes and dtypes (float32, zeros at padding), same temperature
    and masking as TRL 1.16's method; see the module docstring for what it does differently.
    Set ``packed_logprobs = False`` on an instance to use TRL's own path.
    """

    packed_logprobs: bool = True

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False,
                                           compute_aux_loss=False, **extra):
        if not self._can_pack(model, attention_mask, compute_aux_loss, extra):
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **extra)
        batch_size = batch_size or input_ids.size(0)
        text_config = self.accelerator.unwrap_model(model).config.get_text_config()
        no_masks = {kind: None for kind in (getattr(text_config, "layer_types", None)
                                            or ["full_attention"])}
        all_logps, all_entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids, mask = input_ids[start:start + batch_size], attention_mask[start:start + batch_size]
            kwargs, keep = pack_rows(ids, mask, logits_to_keep)
            with self.accelerator.autocast():
                # A dict of None masks skips transformers' mask building: attention is varlen.
                outputs = model(**kwargs, attention_mask=no_masks, fused_lm_head=True)
            all_logps.append(unpack(outputs.log_probs, keep, logits_to_keep))
            if compute_entropy:
                all_entropies.append(unpack(outputs.entropy, keep, logits_to_keep))
        logps = torch.cat(all_logps, dim=0)
        entropies = torch.cat(all_entropies, dim=0) if compute_entropy else None
        return logps, entropies, None

    def _can_pack(self, model, attention_mask, compute_aux_loss, extra) -> bool:
        if not self.packed_logprobs or compute_aux_loss:
            return False
        if any(value is not None for value in extra.values()):
            return False  # images and token types: TRL slices them per row
        if bool(attention_mask.all()):
            return False  # nothing to remove: TRL's path is as fast (no packing overhead)
        if not contiguous_rows(attention_mask):
            return False
        unwrapped = self.accelerator.unwrap_model(model)
        if hasattr(unwrapped, "get_base_model"):  # PEFT
            unwrapped = unwrapped.get_base_model()
        cache = self.__dict__.setdefault("_packable_models", {})
        if id(unwrapped) not in cache:
            cache[id(unwrapped)] = prepare_model_for_packing(unwrapped)
            if not cache[id(unwrapped)]:  # say so once: a silent fallback costs speed and memory
                config = getattr(unwrapped, "config", None)
                warnings.warn(
                    f"padding-free log-probs are off for {type(unwrapped).__name__} (attention "
                    f"{getattr(config, '_attn_implementation', None)!r}, TRL fused head "
                    f"{has_fused_lm_head(unwrapped)}): TRL's padded path is used",
                    RuntimeWarning, stacklevel=2)
        return cache[id(unwrapped)]


# The name the learner's trainer imports.
FastLogprobsMixin = ChunkedLogprobsMixin
