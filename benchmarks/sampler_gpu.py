"""Transformers rollouts at Qwen2.5-1.5B's shape: plain ``generate``, the old sampler and ours.

One run, one device. The batch is the shipped single-GPU recipe's rollout batch
(``recipes/qwen2-5-1-5b-g5.yaml`` and its base): ``per_device_train_batch_size x
gradient_accumulation_steps`` episodes on one GPU (the trainer's generation batch; TRL samples
it in one rollout), that is ``episodes / num_generations`` prompts with ``num_generations``
copies each, and one assistant turn of ``max_tokens_per_turn`` sampled tokens (the recipe's
budget per turn; capped by ``max_completion_length``). Prompts are random tokens,
``--prompt-len`` for the first group and 8 fewer for each next one (the system prompt with the
tool schema plus a question is ~200; groups differ, so the batch is left-padded, as in a
run). The model is
Qwen2.5-1.5B-shaped (hidden 1536, 28 layers, 12 heads, 2 KV heads, intermediate 8960, vocab
151936, tied embeddings) with random weights in bf16, the tokenizer a local BPE
(``mtgrpo.testing.tiny.build_tokenizer``); nothing is downloaded. Nothing stops early: EOS is
ignored in every variant and the recipe's stop strings never appear in random text, so every
variant samples exactly the same number of tokens (ours still checks the stop strings).

Variants, each timed warm (median of ``--repeats`` after a first call whose time is reported
separately, as compiling happens there):

- ``plain_generate``: ``model.generate`` (dynamic cache), the baseline;
- ``plain_generate_static``: ``generate(cache_implementation="static")`` (transformers compiles);
- ``old_sampler``: the previous ``TransformersSampler._batch`` (a host stop check per token,
  ``output_logits=True``), as "today";
- ``ours_dynamic``, ``ours_static``, ``ours_static_compiled``: ``TransformersSampler`` with
  ``cache`` / ``compile`` (logprobs off, as training asks).

Prints and (``--json``) writes tokens/s, its share of the memory-bandwidth bound (one decode
step reads every weight once plus the batch's KV cache: ``B / ((weight bytes + KV bytes) /
bandwidth)``), and peak memory. ``--tiny`` runs the same code on a tiny model on CPU.

    python benchmarks/sampler_gpu.py --tiny                       # CPU smoke run, ~1 min
    python benchmarks/sampler_gpu.py --json sampler_gpu.json       # one GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FULL = dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
            intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True,
            max_position_embeddings=32768, rope_theta=1_000_000.0)
TINY = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            intermediate_size=256, vocab_size=1024, tie_word_embeddings=True,
            max_position_embeddings=2048, rope_theta=10_000.0)
# Peak memory bandwidth (GB/s) by device name, for the bound; --bandwidth-gbs overrides.
BANDWIDTH = {"H200": 4800, "H100": 3350, "A100": 2039, "A10G": 600, "L4": 300, "L40S": 864}
VARIANTS = ("plain_generate", "plain_generate_static", "old_sampler", "ours_dynamic",
            "ours_static", "ours_static_compiled")


def recipe_batch(path: Path) -> dict:
    """The recipe's rollout batch on one GPU (train.check_batch_shape's rule)."""
    from mtgrpo.recipes.loader import load_recipe

    cfg = load_recipe(path).trainer
    episodes = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    return {"recipe": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path),
            "episodes": episodes, "num_generations": cfg.num_generations,
            "new_tokens": min(cfg.max_tokens_per_turn, cfg.max_completion_length),
            "temperature": cfg.temperature, "top_p": cfg.top_p, "tool_format": cfg.tool_format}


def build(tiny: bool, device):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from mtgrpo.testing.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    shape = TINY if tiny else FULL
    config = Qwen2Config(**shape, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    config._attn_implementation = "sdpa"
    dtype = torch.float32 if tiny else torch.bfloat16
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    model.generation_config.eos_token_id = None  # nothing stops early, in every variant
    return model, tokenizer


def old_sampler_batch(model, tokenizer, prompts, budgets, temperature, top_p, stop, pad_id):
    """The previous ``TransformersSampler._batch`` (before the fast path), with EOS off."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[row, width - len(p):] = 1
    tail_tokens = max((len(s) for s in stop), default=0) + 2

    def finished(tokens, budget):
        for n in range(1, len(tokens) + 1):
            if stop and any(s in tokenizer.decode(tokens[max(0, n - tail_tokens):n]) for s in stop):
                return True
            if n >= budget:
                return True
        return False

    class RowStop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            done = [finished(input_ids[row, width:].tolist(), budgets[row])
                    for row in range(input_ids.shape[0])]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    result = model.generate(
        input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max(budgets),
        do_sample=True, temperature=temperature, top_p=top_p, top_k=None, pad_token_id=pad_id,
        eos_token_id=None, stopping_criteria=StoppingCriteriaList([RowStop()]),
        return_dict_in_generate=True, output_logits=True)
    generated = result.sequences[:, width:]
    logits = torch.stack(result.logits, dim=1).float() / temperature
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, generated.unsqueeze(-1)).squeeze(-1)
    return generated.tolist(), logprobs.tolist()


def runner(name, model, tokenizer, prompts, new_tokens, temperature, top_p, stop):
    """A zero-argument call that samples the batch once and returns the sampled token count."""
    import torch

    from mtgrpo.rollout.sampler import TransformersSampler

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    if name.startswith("plain_generate"):
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=device)
        mask = (torch.arange(width, device=device)[None, :]
                >= torch.tensor([width - len(p) for p in prompts], device=device)[:, None]).long()
        extra = {"cache_implementation": "static"} if name.endswith("static") else {}

        def run():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                                 temperature=temperature, top_p=top_p, top_k=None,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 eos_token_id=None, pad_token_id=pad, **extra)
            return (out.shape[1] - width) * out.shape[0]
        return run
    if name == "old_sampler":
        def run():
            tokens, _ = old_sampler_batch(model, tokenizer, prompts, [new_tokens] * len(prompts),
                                          temperature, top_p, stop, pad)
            return sum(len(t) for t in tokens)
        return run
    cache = "dynamic" if name == "ours_dynamic" else "static"
    sampler = TransformersSampler(model, tokenizer, logprobs=False, cache=cache,
                                  compile=name == "ours_static_compiled")
    sampler.eos_ids = []

    def run():
        samples = sampler.generate_sync(prompts, [new_tokens] * len(prompts), temperature, top_p,
                                        stop, seed=0)
        assert all(len(s.token_ids) == new_tokens for s in samples)
        return sum(len(s.token_ids) for s in samples)
    run.sampler = sampler
    return run


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(run, device, repeats: int) -> dict:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    tokens = run()
    sync(device)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        assert run() == tokens
        sync(device)
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    out = {"tokens": tokens, "first_call_s": round(first, 3), "seconds": round(seconds, 4),
           "runs_s": [round(t, 4) for t in times], "tokens_per_s": round(tokens / seconds, 1)}
    if device.type == "cuda":
        out["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    batches = getattr(getattr(run, "sampler", None), "last_batches", None)
    if batches is not None:
        out["decode_batches"] = list(batches)
    return out


def bandwidth_bound(model, batch: int, prompt_len: int, new_tokens: int, gbs: float | None):
    """Tokens/s if every decode step only read the weights once and the KV cache so far."""
    from mtgrpo.rollout.decode import ModelShape

    if not gbs:
        return None
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    kv = ModelShape.of(model).kv_bytes_per_token * batch * (prompt_len + new_tokens / 2)
    # (the mean context of a step; the prompts are a little shorter than prompt_len)
    return batch / ((weights + kv) / (gbs * 1e9))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (smoke run)")
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "qwen2-5-1-5b-g5.yaml")
    parser.add_argument("--episodes", type=int, action="append",
                        help="episodes per rollout (repeatable; default: the recipe's batch)")
    parser.add_argument("--prompt-len", type=int, default=200)
    parser.add_argument("--new-tokens", type=int, help="default: the recipe's max_tokens_per_turn")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--bandwidth-gbs", type=float, help="default: by device name")
    parser.add_argument("--memory-gib", type=float,
                        help="cap this process's GPU memory (stand in for a smaller card)")
    parser.add_argument("--liger", action="store_true",
                        help="apply Liger's layer kernels first, as a GPU job's policy has them")
    parser.add_argument("--train-mode", action="store_true",
                        help="the policy in train mode with checkpointing on, as the trainer "
                             "holds it between optimizer steps")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    import torch
    import transformers

    from mtgrpo.trainer.parsers import get_parser

    batch = recipe_batch(args.recipe)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.tiny:
        batch.update(episodes=4, num_generations=2, new_tokens=16)
        args.prompt_len = min(args.prompt_len, 32)
    new_tokens = args.new_tokens or batch["new_tokens"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    gbs = args.bandwidth_gbs or next((v for k, v in BANDWIDTH.items() if k in name), None)
    if device.type == "cuda" and args.memory_gib:
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(args.memory_gib * 2**30 / total, device)
    model, tokenizer = build(args.tiny, device)
    if args.liger:
        from mtgrpo.trainer import liger

        print("liger kernels:", liger.apply(model, required=True))
    if args.train_mode:
        model.train()
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
    stop = get_parser(batch["tool_format"]).stop
    variants = [v for v in args.variants.split(",") if v]
    if device.type != "cuda":  # compiling for CPU is not what this measures
        variants = [v for v in variants if v not in ("plain_generate_static",
                                                     "ours_static_compiled")]
    machine = {"device": name, "torch": torch.__version__,
               "transformers": transformers.__version__, "python": sys.version.split()[0],
               "platform": platform.platform(), "bandwidth_gbs": gbs,
               "memory_cap_gib": args.memory_gib}
    print(json.dumps(machine))
    print(json.dumps(batch))
    results = []
    g = torch.Generator().manual_seed(0)
    for episodes in args.episodes or [batch["episodes"]]:
        groups = max(1, episodes // batch["num_generations"])
        # Groups' prompts differ in length (8 tokens apart), so the batch is padded, as in a run.
        base = [torch.randint(10, len(tokenizer), (args.prompt_len - 8 * k,), generator=g).tolist()
                for k in range(groups)]
        prompts = [base[i % groups] for i in range(episodes)]
        bound = bandwidth_bound(model, episodes, args.prompt_len, new_tokens, gbs)
        for variant in variants:
            row = {"episodes": episodes, "prompt_len": args.prompt_len,
                   "new_tokens": new_tokens, "variant": variant}
            try:
                run = runner(variant, model, tokenizer, prompts, new_tokens,
                             batch["temperature"], batch["top_p"], stop)
                row.update(measure(run, device, args.repeats))
                if bound:
                    row["bound_tokens_per_s"] = round(bound)
                    row["share_of_bound"] = round(row["tokens_per_s"] / bound, 4)
            except Exception as err:  # noqa: BLE001 - one failing variant must not hide the others
                row["error"] = f"{type(err).__name__}: {err}"[:500]
                traceback.print_exc()
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            results.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'episodes':>8} {'variant':24} {'tokens/s':>10} {'x plain':>8} {'bound':>7} "
          f"{'first s':>8} {'peak GiB':>9}")
    for row in results:
        plain = next((r for r in results if r["episodes"] == row["episodes"]
                      and r["variant"] == "plain_generate" and "tokens_per_s" in r), None)
        if "error" in row:
            print(f"{row['episodes']:>8} {row['variant']:24} error: {row['error'][:80]}")
            continue
        ratio = row["tokens_per_s"] / plain["tokens_per_s"] if plain else float("nan")
        share = f"{100 * row['share_of_bound']:.1f}%" if "share_of_bound" in row else "-"
        print(f"{row['episodes']:>8} {row['variant']:24} {row['tokens_per_s']:>10.0f} "
              f"{ratio:>7.2f}x {share:>7} {row['first_call_s']:>8.1f} "
              f"{row.get('peak_gib', float('nan')):>9.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "batch": batch,
                                         "results": results}, indent=2) + "\n")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
