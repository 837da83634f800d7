"""The learner step at Qwen3-1.7B shape: ours (packed log-probs) against TRL 1.16 GRPOTrainer's own path.

One run, one device. It builds the Qwen3-1.7B-shaped model with random weights (hidden 2048, 28
layers, 16 heads, 8 KV heads, intermediate 6144, vocab 151936, tied embeddings), one fixed
multi-turn GRPO batch (groups of completions sharing a prompt; tool-result tokens masked out of the
loss with TRL's ``tool_mask``; per-token MT-GRPO advantages; old log-probs off by a little, as after
an update or from a vLLM sampler, so the clipped ratio matters), and times, after warm-up, the
median of repeated learner steps (TRL's ``_compute_loss`` + backward + fused AdamW) for:

- ``trl``: a plain ``trl.GRPOTrainer`` (its fused, chunked LM head: TRL 1.16's default and fastest
  log-prob path; its GRPO has no Liger loss any more);
- ``ours``: the same trainer class with ``ChunkedLogprobsMixin`` (padding-free packing);
- ``ours+ckpt/N``: ours with transformers' activation checkpointing of every N-th layer;
- ``trainer default``: what a job runs, built by the trainer's own code from a TrainerConfig with
  the defaults (``train._load_model``: bf16 weights and, where CUDA and liger-kernel are present,
  Liger's RoPE/RMSNorm/SwiGLU kernels; ``train.grpo_args``; ``MTGRPOTrainer`` with the packed
  log-probs; its ``create_optimizer``: AdamW with the precision ``master_weights: auto`` picks,
  fp32 masters on an H200; activation checkpointing of every layer, as HF's loop turns it on),
  and the same without checkpointing (``gradient_checkpointing: false``). It runs after the
  others, on the same initial weights (saved and loaded back), with their model freed first,
  so its peak memory is its own. Liger patches the Qwen3 module for the whole process, which
  is why it comes last: the TRL baseline is TRL's default, without Liger.

MFU counts the model FLOPs a step needs (``flops_per_step``): 6 x the decoder's matmul
parameters per real token (forward 2, backward 4), 6 x hidden x vocab per completion token (the
LM head, where TRL's fused head scores), and causal attention 6 x layers x heads x head_dim x
sum(L^2) per sequence of length L; not the recomputation of checkpointing, so checkpointed runs
do more work than their MFU says. Peak: dense bf16 tensor FLOP/s of the card (H100/H200 SXM
989.4 TFLOP/s) or ``--peak-tflops``.

It checks that ``trl`` and ``ours`` compute the same log-probs, loss and gradients within bf16
tolerance, prints tokens/s (real tokens: prompt + completion, padding not counted), ms/step and peak
memory and the ratios, then times the no-vLLM generation path (transformers ``generate``, two
assistant turns around a tool result). ``--tiny`` runs the same code on a tiny model on CPU.

    python benchmarks/gpu_learner.py --tiny            # CPU check, a minute or two
    python benchmarks/gpu_learner.py --json out.json   # one GPU
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

warnings.filterwarnings("ignore")

FULL = dict(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
            intermediate_size=6144, vocab_size=151936, head_dim=128, tie_word_embeddings=True,
            max_position_embeddings=40960, rope_theta=1_000_000.0)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=512, head_dim=16, tie_word_embeddings=True,
            max_position_embeddings=2048, rope_theta=10_000.0)


@dataclass
class Episode:
    prompt_len: int
    segments: list[tuple[int, bool]]  # (tokens, is_tool_result)


def episodes(groups: int, per_group: int, scale: float, max_completion: int, seed: int,
             equal: bool = False) -> list[Episode]:
    """A fixed multi-turn batch: per group one prompt, completions of 1-3 assistant turns.

    Lengths (full scale, tokens): prompt 180-260 (system prompt with the tool schema + question);
    20% answer at once (30-300), 60% one search (turn 40-160, result 200-512, answer 20-250),
    20% two searches. Tool results are passages cut to a token budget. ``equal``: every
    episode one search of fixed lengths, so there is no padding at all.
    """
    rng = random.Random(seed)

    def n(lo, hi):
        return max(1, round(rng.randint(lo, hi) * scale))

    out = []
    for _ in range(groups):
        prompt = n(180, 260) if not equal else max(1, round(220 * scale))
        for _ in range(per_group):
            if equal:
                segs = [(round(100 * scale), False), (round(400 * scale), True), (round(120 * scale), False)]
            else:
                kind = rng.choices(["answer", "search", "two"], weights=[2, 6, 2])[0]
                if kind == "answer":
                    segs = [(n(30, 300), False)]
                elif kind == "search":
                    segs = [(n(40, 160), False), (n(200, 512), True), (n(20, 250), False)]
                else:
                    segs = [(n(40, 160), False), (n(200, 512), True), (n(40, 160), False),
                            (n(200, 512), True), (n(20, 250), False)]
            kept, total = [], 0
            for length, env in segs:  # truncate at the completion budget, as generation would
                length = min(length, max_completion - total)
                if length > 0:
                    kept.append((length, env))
                    total += length
            out.append(Episode(prompt, kept))
    return out


def make_inputs(eps: list[Episode], per_group: int, vocab: int, device, seed: int):
    """TRL's ``_compute_loss`` inputs: left-padded prompts, right-padded completions, (B, T) advantages."""
    import torch

    g = torch.Generator().manual_seed(seed)
    B = len(eps)
    P = max(e.prompt_len for e in eps)
    C = max(sum(length for length, _ in e.segments) for e in eps)
    prompt_ids = torch.zeros(B, P, dtype=torch.long)
    prompt_mask = torch.zeros(B, P, dtype=torch.long)
    completion_ids = torch.zeros(B, C, dtype=torch.long)
    completion_mask = torch.zeros(B, C, dtype=torch.long)
    tool_mask = torch.zeros(B, C, dtype=torch.long)
    first_turn = torch.zeros(B, C, dtype=torch.bool)
    for b, e in enumerate(eps):
        if b % per_group == 0:  # one prompt per group
            group_prompt = torch.randint(0, vocab, (e.prompt_len,), generator=g)
        prompt_ids[b, P - e.prompt_len:] = group_prompt
        prompt_mask[b, P - e.prompt_len:] = 1
        pos, seen_tool = 0, False
        for length, env in e.segments:
            completion_ids[b, pos:pos + length] = torch.randint(0, vocab, (length,), generator=g)
            completion_mask[b, pos:pos + length] = 1
            tool_mask[b, pos:pos + length] = 0 if env else 1
            first_turn[b, pos:pos + length] = not env and not seen_tool
            seen_tool |= env
            pos += length
    # MT-GRPO advantages: group-normalised outcome and turn rewards; first turn gets A_out + A_turn
    rewards = torch.rand(B, 2, generator=g)
    grouped = rewards.view(-1, per_group, 2)
    adv = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).view(B, 2)
    a_out, a_turn = adv[:, :1], adv[:, 1:]
    advantages = (a_out + a_turn * first_turn) * completion_mask * tool_mask
    loss_mask = completion_mask * tool_mask
    inputs = {
        "prompt_ids": prompt_ids, "prompt_mask": prompt_mask,
        "completion_ids": completion_ids, "completion_mask": completion_mask,
        "tool_mask": tool_mask, "advantages": advantages.float(),
        "num_items_in_batch": loss_mask.sum().float(),
    }
    return {k: v.to(device) for k, v in inputs.items()}


def build(tiny: bool, device: str):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**(TINY if tiny else FULL), attn_implementation="sdpa")
    dtype = torch.float32 if tiny else torch.bfloat16
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # random init directly on the card: seconds, not minutes
            model = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return model.train()


def trainers(model, batch: int, per_group: int, max_completion: int, tiny: bool, device: str):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from mtgrpo.testing.tiny import build_tokenizer
    from mtgrpo.trainer.fast_logprobs import ChunkedLogprobsMixin

    class Ours(ChunkedLogprobsMixin, GRPOTrainer):
        pass

    def make(cls):
        args = GRPOConfig(
            output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch,
            num_generations=per_group, max_completion_length=max_completion, temperature=0.9,
            bf16=not tiny, use_cpu=device == "cpu", report_to="none", logging_steps=10 ** 6)
        trainer = cls(model=model, reward_funcs=lambda completions, **_: [0.0] * len(completions),
                      args=args, train_dataset=Dataset.from_dict({"prompt": ["q"] * batch}),
                      processing_class=build_tokenizer())
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which we skip
        return trainer

    return make(GRPOTrainer), make(Ours)


# Dense bf16 tensor-core FLOP/s (no sparsity), by device name.
PEAK_BF16 = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12, "L40S": 362.05e12,
             "A10G": 70e12}


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    return next((v for k, v in PEAK_BF16.items() if k in device_name), None)


def flops_per_step(config, inputs) -> dict:
    """Model FLOPs of one learner step (forward + backward) on this batch: see the docstring."""
    h, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    per_layer = h * heads * head_dim * 2 + h * kv * head_dim * 2 + 3 * h * config.intermediate_size
    lengths = (inputs["prompt_mask"].sum(1) + inputs["completion_mask"].sum(1)).double()
    real = float(lengths.sum())
    completion = float(inputs["completion_mask"].sum())
    decoder = 6.0 * layers * per_layer * real
    head = 6.0 * h * vocab * completion
    attention = 6.0 * layers * heads * head_dim * float((lengths ** 2).sum())
    total = decoder + head + attention
    return {"decoder": decoder, "lm_head": head, "attention": attention, "total": total,
            "per_real_token": total / real, "real_tokens": real, "completion_tokens": completion}


def default_trainer(model_dir: str, batch: int, per_group: int, max_completion: int):
    """The trainer a job builds, by the trainer's own code, from a TrainerConfig with the defaults.

    Set here: the batch shape, the completion budget, and loss_type "dapo" (TRL's default) so
    the loss is the one the TRL baseline and the float32 reference compute. Checkpointing is
    turned on as HF's training loop does it (``Trainer._inner_training_loop``), which this
    benchmark does not run."""
    from mtgrpo.contract import TrainerConfig
    from mtgrpo.trainer.grpo_trainer import MTGRPOTrainer
    from mtgrpo.trainer.paths import RunPaths
    from mtgrpo.trainer.train import _load_model, grpo_args
    from mtgrpo.trainer.types import QARecord

    config = TrainerConfig(model_name_or_path=model_dir, num_generations=per_group,
                           per_device_train_batch_size=batch, gradient_accumulation_steps=1,
                           max_completion_length=max_completion,
                           max_tokens_per_turn=min(256, max_completion), loss_type="dapo",
                           eval_steps=0)
    out = tempfile.mkdtemp()
    paths = RunPaths(model_dir, f"{out}/train.jsonl", None, out, f"{out}/o", f"{out}/m", f"{out}/c")
    tokenizer, model = _load_model(config, model_dir)
    args = grpo_args(config, paths)
    trainer = MTGRPOTrainer(model, args, processing_class=tokenizer, config=config,
                            train_records=[QARecord(id="q", question="q", aliases=("a",))],
                            rollout=lambda records: [], scorer=lambda episode: None)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which we skip
    if args.gradient_checkpointing:
        trainer.model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs)
    trainer.model.train()
    optimizer = trainer.create_optimizer()
    return trainer, config, optimizer


@contextlib.contextmanager
def unpacked(trainer):
    """The trainer's TRL path (padded, TRL's own log-probs): the check's yardstick."""
    before = trainer.packed_logprobs
    trainer.packed_logprobs = False
    try:
        yield
    finally:
        trainer.packed_logprobs = before


def run_default(prepared, model_dir, args, device, names, batch, max_completion) -> dict:
    import torch

    trainer, config, optimizer = default_trainer(model_dir, batch, args.per_group, max_completion)
    model = trainer.model
    settings = {"liger_kernels": list(getattr(model, "mtgrpo_liger_kernels", [])),
                "master_weights": trainer.master_weights.name,
                "master_weights_how": trainer.master_weights.how,
                "optimizer": type(optimizer).__name__,
                "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
                "packed_logprobs": trainer.packed_logprobs}
    print(f"\n== trainer default path: liger kernels "
          f"{', '.join(settings['liger_kernels']) or 'off'}; master weights "
          f"{settings['master_weights']} ({settings['master_weights_how']}); optimizer "
          f"{settings['optimizer']}; checkpointing {settings['gradient_checkpointing']}; packed "
          f"log-probs {settings['packed_logprobs']}")
    out = {"settings": settings, "batches": {}}
    failed = False
    for label, inputs in prepared:
        flops = flops_per_step(model.config, inputs)
        real = int(flops["real_tokens"])
        entry = {}
        print(f"-- {label}")
        print_flops(entry, flops, args.peak)
        entry["check"] = c = check(trainer, trainer, model, inputs, names, bf16=device == "cuda",
                                   trl_path=lambda: unpacked(trainer))
        print_check(c, labels=("trl", "dflt"))
        failed |= not c["ok"]
        timings = {}
        timings["trainer default"] = report("trainer default", time_steps(
            trainer, model, optimizer, inputs, args.warmup, args.repeats, device), real, flops,
            args.peak)
        if settings["gradient_checkpointing"]:
            model.gradient_checkpointing_disable()
            try:
                t = time_steps(trainer, model, optimizer, inputs, args.warmup, args.repeats, device)
            except Exception as exc:  # out of memory: keep the other numbers
                t = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
                optimizer.zero_grad(set_to_none=True)
                if device == "cuda":
                    torch.cuda.empty_cache()
            finally:
                model.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs)
            timings["default, no ckpt"] = report("default, no ckpt", t, real, flops, args.peak)
        entry["timings"] = timings
        entry["ok"] = c["ok"]
        out["batches"][label] = entry
    out["ok"] = not failed
    return out


def sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def old_logps(trl_trainer, model, inputs, seed):
    """Per-token log-probs of the current policy plus noise: a stale policy, so ratios clip."""
    import torch

    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    with torch.no_grad():
        logps, _, _ = trl_trainer._get_per_token_logps_and_entropies(
            model, ids, mask, inputs["completion_ids"].size(1))
    g = torch.Generator(device=logps.device).manual_seed(seed)
    noise = 0.1 * torch.randn(logps.shape, generator=g, device=logps.device)
    return (logps + noise) * inputs["completion_mask"]


def _grad_run(trainer, model, inputs, names, row_chunk=None) -> dict:
    """Loss, per-token log-probs/entropies and gradients of one path (no optimizer step).

    ``row_chunk`` splits the rows: TRL's default loss ("dapo") is a sum over tokens divided by the
    batch's token count, so chunks add up to the whole batch exactly (used for the fp32 reference).
    """
    import torch

    B = inputs["prompt_ids"].size(0)
    step = row_chunk or B
    params = dict(model.named_parameters())
    model.zero_grad(set_to_none=True)
    loss_sum, logps, entropies = 0.0, [], []
    for start in range(0, B, step):
        part = {k: (v[start:start + step] if v.dim() and v.size(0) == B else v) for k, v in inputs.items()}
        ids = torch.cat([part["prompt_ids"], part["completion_ids"]], 1)
        mask = torch.cat([part["prompt_mask"], part["completion_mask"]], 1)
        with torch.no_grad():
            lp, h, _ = trainer._get_per_token_logps_and_entropies(
                model, ids, mask, part["completion_ids"].size(1), compute_entropy=True)
        loss_mask = (part["completion_mask"] * part["tool_mask"]).bool()
        logps.append(lp[loss_mask].float())
        entropies.append(h[loss_mask].float())
        loss = trainer.compute_loss(model, part)
        loss.backward()
        loss_sum += loss.item()
    grads = {n: params[n].grad.float().clone() for n in names}
    norm = torch.sqrt(sum(p.grad.float().pow(2).sum() for p in model.parameters() if p.grad is not None))
    model.zero_grad(set_to_none=True)
    return {"loss": loss_sum, "logps": torch.cat(logps), "entropy": torch.cat(entropies),
            "grads": grads, "grad_norm": norm.item()}


def _errors(run, ref, names) -> dict:
    import torch

    return {
        "loss": run["loss"], "loss_abs_err": abs(run["loss"] - ref["loss"]),
        "logp_mean_abs_err": (run["logps"] - ref["logps"]).abs().mean().item(),
        "logp_max_abs_err": (run["logps"] - ref["logps"]).abs().max().item(),
        "entropy_mean_abs_err": (run["entropy"] - ref["entropy"]).abs().mean().item(),
        "grad_rel_err_max": max(((run["grads"][n] - ref["grads"][n]).norm()
                                 / ref["grads"][n].norm().clamp(min=1e-30)).item() for n in names),
        "grad_cosine_min": min(torch.nn.functional.cosine_similarity(
            run["grads"][n].flatten(), ref["grads"][n].flatten(), 0).item() for n in names),
        "grad_norm": run["grad_norm"],
    }


def check(trl_trainer, ours_trainer, model, inputs, names, bf16: bool,
          trl_path=contextlib.nullcontext) -> dict:
    """Do both paths compute the same loss, log-probs and gradients?

    In float32 (``--tiny``) they must agree to rounding. In bf16 the two paths round differently
    (other GEMM shapes and attention kernels), so each is compared with a float32 run of TRL's path
    on the same weights, and ours must be about as close to it as TRL's own bf16 path is: mean
    log-prob error and gradient error within 1.25x of TRL's (plus a small floor), gradient cosine
    within 0.01 of TRL's. The loss is a sum of advantage-weighted ratios whose signs cancel, so its
    bf16 error is random: ours may be off by 2x TRL's error or 4 of its expected size
    (mean log-prob error x mean |advantage| / sqrt(loss tokens)), whichever is larger.
    """
    import torch

    if bf16:
        # Only the parameters: buffers such as RoPE's inv_freq stay float32 in a bf16 model.
        params = list(model.parameters())
        for p in params:
            p.data = p.data.float()
        native = trl_trainer.accelerator.native_amp
        trl_trainer.accelerator.native_amp = False  # no autocast: a true float32 reference
        try:
            with trl_path():
                ref = _grad_run(trl_trainer, model, inputs, names, row_chunk=2)
        finally:
            trl_trainer.accelerator.native_amp = native
            for p in params:
                p.data = p.data.to(torch.bfloat16)  # bf16 -> fp32 -> bf16 is exact
        reference = "TRL path, float32"
    else:
        with trl_path():
            ref = _grad_run(trl_trainer, model, inputs, names)
        reference = "TRL path (float32 model)"
    with trl_path():
        trl = _errors(_grad_run(trl_trainer, model, inputs, names), ref, names)
    ours = _errors(_grad_run(ours_trainer, model, inputs, names), ref, names)
    if bf16:
        loss_mask = (inputs["completion_mask"] * inputs["tool_mask"]).bool()
        expected = (trl["logp_mean_abs_err"] * inputs["advantages"][loss_mask].abs().mean().item()
                    / max(1, int(loss_mask.sum())) ** 0.5)
        ok = (ours["logp_mean_abs_err"] <= 1.25 * trl["logp_mean_abs_err"] + 1e-3
              and ours["grad_rel_err_max"] <= 1.25 * trl["grad_rel_err_max"] + 1e-2
              and ours["grad_cosine_min"] >= trl["grad_cosine_min"] - 0.01
              and ours["loss_abs_err"] <= max(2 * trl["loss_abs_err"], 4 * expected))
    else:
        ok = (ours["loss_abs_err"] <= 1e-5 * max(1.0, abs(ref["loss"]))
              and ours["logp_max_abs_err"] <= 1e-4 and ours["grad_rel_err_max"] <= 1e-3)
    return {"reference": reference, "reference_loss": ref["loss"], "trl": trl, "ours": ours, "ok": bool(ok)}


def learner_step(trainer, model, optimizer, inputs) -> None:
    """One learner step as HF's loop runs it: loss, backward, clip, optimizer step."""
    import torch

    optimizer.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, inputs)
    loss.backward()
    if trainer.args.max_grad_norm:  # HF's loop clips before every optimizer step
        torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.args.max_grad_norm)
    optimizer.step()


def time_steps(trainer, model, optimizer, inputs, warmup, repeats, device) -> dict:
    import torch

    def step():
        learner_step(trainer, model, optimizer, inputs)

    for _ in range(warmup):
        step()
    optimizer.zero_grad(set_to_none=True)
    sync(device)
    if device == "cuda":
        torch.cuda.empty_cache()
        fixed = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    out = {"ms_per_step": 1000 * statistics.median(times), "ms_all": [round(1000 * t, 1) for t in times]}
    if device == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        out["fixed_gib"] = fixed / 2 ** 30  # weights + optimizer state, before the step
    return out


def time_generation(model, eps, vocab, device, turn_tokens, tool_tokens, seed) -> dict:
    """No-vLLM rollouts: ``generate`` turn 1, append a tool result, ``generate`` turn 2."""
    import torch

    g = torch.Generator().manual_seed(seed)
    B = len(eps)
    P = max(e.prompt_len for e in eps)
    ids = torch.zeros(B, P, dtype=torch.long)
    mask = torch.zeros(B, P, dtype=torch.long)
    for b, e in enumerate(eps):
        ids[b, P - e.prompt_len:] = torch.randint(0, vocab, (e.prompt_len,), generator=g)
        mask[b, P - e.prompt_len:] = 1
    ids, mask = ids.to(device), mask.to(device)
    gen = dict(do_sample=True, temperature=0.9, top_p=1.0, max_new_tokens=turn_tokens,
               min_new_tokens=turn_tokens, pad_token_id=0, eos_token_id=None)
    model.eval()
    try:
        with torch.no_grad():
            sync(device)
            t0 = time.perf_counter()
            out = model.generate(input_ids=ids, attention_mask=mask, **gen)
            tool = torch.randint(0, vocab, (B, tool_tokens), generator=g).to(device)
            ids2 = torch.cat([out, tool], 1)
            mask2 = torch.cat([mask, torch.ones_like(out[:, P:]), torch.ones_like(tool)], 1)
            out2 = model.generate(input_ids=ids2, attention_mask=mask2, **gen)
            sync(device)
            seconds = time.perf_counter() - t0
    finally:
        model.train()
    new = B * 2 * turn_tokens
    assert out2.shape == (B, ids2.shape[1] + turn_tokens)
    return {"episodes": B, "turns": 2, "tokens_per_turn": turn_tokens, "tool_tokens": tool_tokens,
            "seconds": seconds, "sampled_tokens_per_s": new / seconds}


def print_check(c, labels=("trl", "ours")) -> None:
    for name, label in zip(("trl", "ours"), labels):
        e = c[name]
        print(f"check {label:>4} vs {c['reference']}: loss {e['loss']:.6f} "
              f"(ref {c['reference_loss']:.6f}, "
              f"err {e['loss_abs_err']:.1e}); logp err mean {e['logp_mean_abs_err']:.1e} max "
              f"{e['logp_max_abs_err']:.1e}; grad rel err max {e['grad_rel_err_max']:.1e}, cosine min "
              f"{e['grad_cosine_min']:.5f}")
    print("check: " + ("OK" if c["ok"] else "FAILED"))


def report(name, t, real, flops, peak) -> dict:
    """Add tokens/s, TFLOP/s and MFU to one timing and print its line."""
    if "ms_per_step" in t:
        seconds = t["ms_per_step"] / 1000
        t["tokens_per_s"] = real / seconds
        t["tflops"] = flops["total"] / seconds / 1e12
        if peak:
            t["mfu"] = flops["total"] / seconds / peak
    print(f"{name:>18}: " + (t.get("error") or f"{t['ms_per_step']:8.1f} ms/step  "
          f"{t['tokens_per_s']:9.0f} tokens/s  {t['tflops']:7.2f} TFLOP/s"
          + (f"  MFU {100 * t['mfu']:5.1f}%" if "mfu" in t else "")
          + (f"  peak {t['peak_gib']:6.2f} GiB (weights+optimizer {t['fixed_gib']:.2f})"
             if "peak_gib" in t else "")))
    return t


def print_flops(entry, flops, peak) -> None:
    entry["flops"] = flops
    entry["peak_flops"] = peak
    print(f"model FLOPs per step {flops['total'] / 1e12:.3g} T = {flops['per_real_token'] / 1e9:.3g} "
          f"GFLOP per real token (decoder {flops['decoder'] / flops['total']:.0%}, LM head "
          f"{flops['lm_head'] / flops['total']:.0%}, attention {flops['attention'] / flops['total']:.0%}); "
          + (f"peak {peak / 1e12:.1f} TFLOP/s" if peak else "peak unknown: --peak-tflops for MFU"))


def run_batch(label, inputs, trl_trainer, ours_trainer, model, optimizer, names, args, device,
              variants, do_check=True) -> dict:
    import torch

    from mtgrpo.trainer.fast_logprobs import attention_backend

    flops = flops_per_step(model.config, inputs)
    peak = args.peak
    real = int(inputs["prompt_mask"].sum() + inputs["completion_mask"].sum())
    padded = inputs["prompt_mask"].numel() + inputs["completion_mask"].numel()
    entry = {"episodes": inputs["prompt_ids"].size(0),
             "width": inputs["prompt_ids"].size(1) + inputs["completion_ids"].size(1),
             "real_tokens": real, "padded_tokens": padded, "real_fraction": real / padded,
             "loss_tokens": int(inputs["num_items_in_batch"])}
    print(f"\n== {label}: {entry['episodes']} episodes, width {entry['width']}, "
          f"real tokens {real} of {padded} "
          f"({100 * real / padded:.0f}%), loss tokens {entry['loss_tokens']}")
    print_flops(entry, flops, peak)
    ok = True
    if do_check:
        entry["check"] = c = check(trl_trainer, ours_trainer, model, inputs, names, bf16=device == "cuda")
        print_check(c)
        ok = c["ok"]
    entry["packed_attention"] = attention_backend(device)
    timings = {}
    for name, trainer, every in variants:
        if every:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False},
                                                every_n_layers=every)
        try:
            t = time_steps(trainer, model, optimizer, inputs, args.warmup, args.repeats, device)
        except Exception as exc:  # an out-of-memory or a kernel error: report it, keep the other numbers
            t = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
            optimizer.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.empty_cache()
        finally:
            if every:
                model.gradient_checkpointing_disable()
        timings[name] = report(name, t, real, flops, peak)
    base = timings.get("trl")
    for name, t in timings.items():
        if base and name != "trl" and "ms_per_step" in t and "ms_per_step" in base:
            t["speedup_vs_trl"] = base["ms_per_step"] / t["ms_per_step"]
            line = f"{name:>18}: {t['speedup_vs_trl']:.2f}x TRL tokens/s"
            if "peak_gib" in t:
                t["memory_vs_trl"] = t["peak_gib"] / base["peak_gib"]
                line += f", {100 * t['memory_vs_trl']:.0f}% of TRL peak memory"
            print(line)
    entry["timings"] = timings
    entry["ok"] = ok
    return entry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU: checks the code path")
    parser.add_argument("--groups", type=int, nargs="+", default=[2],
                        help="one multi-turn batch per value: that many prompts (groups)")
    parser.add_argument("--per-group", type=int, default=4, help="completions per prompt")
    parser.add_argument("--max-completion", type=int, default=1536)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ckpt-every", type=int, nargs="*", default=[2],
                        help="also time ours with activation checkpointing of every N-th layer")
    parser.add_argument("--equal-lengths", action="store_true",
                        help="also time a batch without padding (packing has nothing to remove)")
    parser.add_argument("--peak-tflops", type=float,
                        help="the device's dense bf16 peak for MFU (default: by device name)")
    parser.add_argument("--no-default", action="store_true",
                        help="skip the trainer's default path (the last phase)")
    parser.add_argument("--gen-groups", type=int, default=2, help="groups in the generate batch")
    parser.add_argument("--no-generate", action="store_true")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)

    import torch
    import transformers
    import trl

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    if not args.tiny and device == "cpu":
        print("no CUDA device: use --tiny on CPU", file=sys.stderr)
        return 2
    scale = 1 / 16 if args.tiny else 1.0
    max_completion = max(8, round(args.max_completion * scale))
    info = {"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
            "model": "tiny Qwen3" if args.tiny else "Qwen3-1.7B shape, random weights, bf16, SDPA",
            "argv": sys.argv[1:]}
    print(json.dumps(info))

    args.peak = peak_flops(info["device"], args.peak_tflops) if device == "cuda" else (
        args.peak_tflops * 1e12 if args.peak_tflops else None)
    model = build(args.tiny, device)
    vocab = model.config.vocab_size
    model_dir = None
    if not args.no_default:  # the same initial weights for the trainer's default path
        from mtgrpo.testing.tiny import build_tokenizer

        model_dir = tempfile.mkdtemp(prefix="gpu-learner-model-")
        model.save_pretrained(model_dir)
        build_tokenizer().save_pretrained(model_dir)
    trl_trainer, ours_trainer = trainers(model, max(args.groups) * args.per_group, args.per_group,
                                         max_completion, args.tiny, device)
    assert trl_trainer.loss_type == "dapo"  # the chunked float32 reference relies on it (see _grad_run)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=device == "cuda")
    layers = model.config.num_hidden_layers
    names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
             f"model.layers.{layers // 2}.mlp.down_proj.weight",
             f"model.layers.{layers - 1}.mlp.gate_proj.weight", "model.norm.weight"]

    batches = []
    for groups in args.groups:
        eps = episodes(groups, args.per_group, scale, max_completion, seed=groups)
        batches.append((f"multi-turn {groups}x{args.per_group}", eps))
    if args.equal_lengths:
        eps = episodes(args.groups[0], args.per_group, scale, max_completion, seed=0, equal=True)
        batches.append((f"equal-lengths {args.groups[0]}x{args.per_group}", eps))
    prepared = []
    for label, eps in batches:
        inputs = make_inputs(eps, args.per_group, vocab, device, seed=2)
        inputs["old_per_token_logps"] = old_logps(trl_trainer, model, inputs, seed=3)
        prepared.append((label, inputs))

    variants = [("trl", trl_trainer, 0), ("ours", ours_trainer, 0)]
    variants += [(f"ours+ckpt/{n}", ours_trainer, n) for n in args.ckpt_every]
    variants += [("trl (again)", trl_trainer, 0)]  # drift check: the first and last runs should agree
    results = {"info": info, "batches": {}}
    failed = False
    for label, inputs in prepared:
        entry = run_batch(label, inputs, trl_trainer, ours_trainer, model, optimizer, names, args, device,
                          variants)
        results["batches"][label] = entry
        failed |= not entry["ok"]

    if model_dir is not None:
        del trl_trainer, ours_trainer, optimizer
        model.zero_grad(set_to_none=True)
        model.to("cpu")  # parked (generation below uses it): the default path's peak is its own
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        default = run_default(prepared, model_dir, args, device, names,
                              max(args.groups) * args.per_group, max_completion)
        results["trainer_default"] = default
        failed |= not default["ok"]
        for label, entry in default["batches"].items():
            base = results["batches"].get(label, {}).get("timings", {}).get("trl", {})
            for name, t in entry["timings"].items():
                if "ms_per_step" in t and "ms_per_step" in base:
                    t["speedup_vs_trl"] = base["ms_per_step"] / t["ms_per_step"]
                    line = f"{name:>18}: {t['speedup_vs_trl']:.2f}x TRL tokens/s ({label})"
                    if "peak_gib" in t and "peak_gib" in base:
                        t["memory_vs_trl"] = t["peak_gib"] / base["peak_gib"]
                        line += f", {100 * t['memory_vs_trl']:.0f}% of TRL peak memory"
                    print(line)
        shutil.rmtree(model_dir, ignore_errors=True)
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        model.to(device)

    if not args.no_generate:
        eps = episodes(args.gen_groups, args.per_group, scale, max_completion, seed=7)
        gen = time_generation(model, eps, vocab, device, turn_tokens=max(4, round(128 * scale)),
                              tool_tokens=max(4, round(256 * scale)), seed=4)
        results["generation"] = gen
        print(f"\ngenerate (transformers, no vLLM): {gen['episodes']} episodes x {gen['turns']} turns of "
              f"{gen['tokens_per_turn']} tokens around a {gen['tool_tokens']}-token tool result: "
              f"{gen['seconds']:.2f} s, {gen['sampled_tokens_per_s']:.0f} sampled tokens/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
    if failed:
        print("\nFAILED: our path and TRL's disagree beyond tolerance", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
