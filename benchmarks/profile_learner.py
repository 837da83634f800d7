"""Where the trainer's default learner step spends its time, on one GPU (issue 14, item 2).

It builds the trainer's own default path exactly as ``benchmarks/gpu_learner.py`` does
(``train._load_model``: bf16 + Liger; ``grpo_args``; ``MTGRPOTrainer`` with packed log-probs;
its ``create_optimizer``: fp32 masters on an H200), on the same fixed multi-turn batch at the
Qwen3-1.7B shape, and then:

1. times the step with activation checkpointing of every layer (what HF's loop turns on), of
   every 2nd and 4th layer, and without checkpointing: ms/step, MFU and peak memory (the
   trade-off a recipe picks with ``gradient_checkpointing``);
2. runs ``torch.profiler`` over two steps of the checkpointed default and of the uncheckpointed
   one, and sorts the CUDA kernel time into matmuls, attention, Liger's Triton kernels, TRL's
   chunked log-prob kernels, the optimizer (AdamW, master copies), other elementwise work and
   memory copies, plus the host gap (wall time in which no kernel ran).

    python benchmarks/profile_learner.py --json out.json      # one GPU
    python benchmarks/profile_learner.py --tiny               # CPU: checks the code path
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gpu_learner as gl  # noqa: E402  the batch, FLOP count and default trainer are shared

CATEGORIES = (  # first match wins, on the lower-cased kernel name
    ("optimizer", ("adam", "multi_tensor", "foreach", "fused_adamw")),
    ("attention", ("flash", "fmha", "attention", "varlen")),
    ("matmul", ("gemm", "cutlass", "sm90_xmma", "nvjet", "cublas", "matmul")),
    ("liger (triton)", ("liger", "_rms_norm", "_rope", "swiglu", "_geglu")),
    ("log-probs (triton)", ("chunked", "logprob", "lse", "logsumexp")),
    ("memory copies", ("memcpy", "memset", "copy_", "cat", "index", "scatter", "gather")),
    ("elementwise/other", ("",)),
)


def category(name: str) -> str:
    low = name.lower()
    for label, needles in CATEGORIES:
        if any(n in low for n in needles):
            return label
    return "elementwise/other"


def profile_steps(trainer, model, optimizer, inputs, device: str, steps: int = 2) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    def step():
        gl.learner_step(trainer, model, optimizer, inputs)

    step()  # warm
    gl.sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        gl.sync(device)
    wall = (time.perf_counter() - t0) / steps
    by_cat: dict[str, float] = collections.Counter()
    top: dict[str, float] = collections.Counter()
    kernel_us = 0.0
    for evt in prof.events():
        if device == "cuda":
            if evt.device_type != torch.autograd.DeviceType.CUDA:
                continue
            us = evt.device_time
        else:
            if evt.cpu_parent is not None:
                continue
            us = evt.cpu_time
        by_cat[category(evt.name)] += us
        top[evt.name] += us
        kernel_us += us
    per = 1e-3 / steps  # us over all steps -> ms per step
    out = {"wall_ms": 1000 * wall, "kernel_ms": kernel_us * per,
           "host_gap_ms": max(0.0, 1000 * wall - kernel_us * per),
           "categories_ms": {k: v * per for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
           "top_kernels_ms": [(k[:90], v * per) for k, v in top.most_common(15)]}
    return out


def print_profile(label: str, p: dict) -> None:
    print(f"-- profile: {label}: wall {p['wall_ms']:.1f} ms/step, kernels {p['kernel_ms']:.1f} ms, "
          f"host gap {p['host_gap_ms']:.1f} ms")
    for name, ms in p["categories_ms"].items():
        print(f"   {name:>20}: {ms:7.1f} ms  {100 * ms / max(p['kernel_ms'], 1e-9):5.1f}%")
    print("   top kernels:")
    for name, ms in p["top_kernels_ms"][:10]:
        print(f"     {ms:7.1f} ms  {name}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--per-group", type=int, default=4)
    parser.add_argument("--max-completion", type=int, default=1536)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--every", type=int, nargs="*", default=[1, 2, 4, 0],
                        help="checkpoint every N-th layer (0 = no checkpointing)")
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    import torch

    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    scale = 1 / 16 if args.tiny else 1.0
    max_completion = max(8, round(args.max_completion * scale))
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = gl.peak_flops(name, None) if device == "cuda" else None
    model = gl.build(args.tiny, device)
    vocab = model.config.vocab_size
    from mtgrpo.testing.tiny import build_tokenizer

    model_dir = tempfile.mkdtemp(prefix="profile-learner-")
    model.save_pretrained(model_dir)
    build_tokenizer().save_pretrained(model_dir)
    del model
    batch = args.groups * args.per_group
    trainer, _config, optimizer = gl.default_trainer(model_dir, batch, args.per_group, max_completion)
    model = trainer.model
    eps = gl.episodes(args.groups, args.per_group, scale, max_completion, seed=args.groups)
    inputs = gl.make_inputs(eps, args.per_group, vocab, device, seed=2)
    with torch.no_grad():
        inputs["old_per_token_logps"] = None
    flops = gl.flops_per_step(model.config, inputs)
    real = int(flops["real_tokens"])
    print(json.dumps({"device": name, "torch": torch.__version__,
                      "liger": list(getattr(model, "mtgrpo_liger_kernels", [])),
                      "master_weights": trainer.master_weights.name,
                      "optimizer": type(optimizer).__name__, "episodes": batch,
                      "real_tokens": real, "gflop_per_token": flops["total"] / real / 1e9}))
    results = {"device": name, "timings": {}, "profiles": {}}
    for every in args.every:
        model.gradient_checkpointing_disable()
        if every:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}, every_n_layers=every)
        label = f"ckpt every {every}" if every else "no ckpt"
        try:
            t = gl.time_steps(trainer, model, optimizer, inputs, args.warmup, args.repeats, device)
        except Exception as exc:  # out of memory: keep the other rows
            t = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            optimizer.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.empty_cache()
        results["timings"][label] = gl.report(label, t, real, flops, peak)
        if every in (1, 0) and "error" not in t:
            p = profile_steps(trainer, model, optimizer, inputs, device)
            results["profiles"][label] = p
            print_profile(label, p)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
