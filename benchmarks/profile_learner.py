"""Where the trainer's default learner step spends its time, on one GPU.

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
import statistics
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


# Selective activation checkpointing (measured, not adopted: see docs/performance.md): keep the
# outputs of the matmuls and attention ops, recompute the cheap ops between them (norms, RoPE,
# SwiGLU, adds), through torch's create_selective_checkpoint_contexts as transformers'
# checkpointing context_fn.
_SAVED = {"mm", "addmm", "bmm"}  # plus every attention op (names with "attn"/"attention")


def _saves(op) -> bool:
    """Keep this op's output? ``op`` is an OpOverload: aten.mm.default, torch_attn._varlen_attn..."""
    base = str(getattr(op, "overloadpacket", op)).rsplit(".", 1)[-1].lstrip("_").lower()
    return base in _SAVED or "attn" in base or "attention" in base


def _selective_context():
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    def policy(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if _saves(op) else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


def _set_checkpointing(model, mode: str | None) -> None:
    """mode None (off), "full" (every layer) or "selective" (every layer, SAC)."""
    model.gradient_checkpointing_disable()
    if mode:
        kwargs = {"use_reentrant": False}
        if mode == "selective":
            kwargs["context_fn"] = _selective_context
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _compile_layers(model, on: bool) -> None:
    import torch

    for layer in model.model.layers:
        if on:
            layer.compile(dynamic=True)
        else:
            layer._compiled_call_impl = None
    if not on:
        torch._dynamo.reset()


def _loop_copies_step(optimizer):
    """The optimizer step before the foreach copies: one cast and one write-back per tensor."""
    import torch

    @torch.no_grad()
    def step(closure=None):
        for p, master in optimizer._pairs:
            master.grad = None if p.grad is None else p.grad.to(torch.float32)
            p.grad = None
        torch.optim.AdamW.step(optimizer)
        for p, master in optimizer._pairs:
            p.copy_(master)
            master.grad = None
    return step


def run_variant(name, trainer, model, optimizer, inputs, args, device):
    """More timed rows: [(label, timing)]. Leaves the model as it found it (no ckpt)."""
    import torch

    def timed():
        try:
            return gl.time_steps(trainer, model, optimizer, inputs, args.warmup, args.repeats,
                                 device)
        except Exception as exc:  # out of memory, a compile failure: keep the other rows
            optimizer.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.empty_cache()
            return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}

    if name == "optimizer":
        if not hasattr(optimizer, "_pairs"):
            return [("optimizer step", {"error": "not MasterWeightsAdamW"})]
        params = [p for p in model.parameters() if p.requires_grad]
        loop = _loop_copies_step(optimizer)
        times: dict[str, list[float]] = {"optimizer step (foreach casts)": [],
                                         "optimizer step (per-tensor copies)": []}
        for i in range(args.warmup + 2 * args.repeats):
            for label, fn in zip(times, (optimizer.step, loop)):
                for p in params:  # tiny updates: the weights stay what the other rows time
                    p.grad = torch.full_like(p, 1e-6)
                gl.sync(device)
                t0 = time.perf_counter()
                fn()
                gl.sync(device)
                if i >= args.warmup:
                    times[label].append(time.perf_counter() - t0)
        optimizer.zero_grad(set_to_none=True)
        return [(label, {"ms_per_step": 1000 * statistics.median(ts),
                         "ms_all": [round(1000 * t, 2) for t in ts]})
                for label, ts in times.items()]
    if name == "selective":
        _set_checkpointing(model, "selective")
        t = timed()
        _set_checkpointing(model, None)
        return [("selective ckpt", t)]
    if name == "loop-copies":
        _set_checkpointing(model, None)
        if not hasattr(optimizer, "_pairs"):
            return [("loop copies, no ckpt", {"error": "not MasterWeightsAdamW"})]
        optimizer.step = _loop_copies_step(optimizer)
        t = timed()
        del optimizer.step  # back to the class's foreach step
        return [("loop copies, no ckpt", t)]
    if name in ("compiled", "compiled-selective"):
        mode = "selective" if name == "compiled-selective" else None
        _set_checkpointing(model, mode)
        _compile_layers(model, True)
        t0 = time.perf_counter()
        t = timed()
        t["wall_with_compile_s"] = time.perf_counter() - t0
        _compile_layers(model, False)
        _set_checkpointing(model, None)
        return [(f"compiled layers, {'selective ckpt' if mode else 'no ckpt'}", t)]
    if name == "kahan":
        from optimi import AdamW as OptimiAdamW

        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad(set_to_none=True)
        del optimizer.state, optimizer.param_groups  # free the fp32 masters and moments
        getattr(optimizer, "_pairs", []).clear()
        import gc

        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        kahan = OptimiAdamW(model.parameters(), lr=lr, eps=1e-8, kahan_sum=True)
        rows = {}
        for mode in (None, "selective"):
            _set_checkpointing(model, mode)
            try:
                rows[mode] = gl.time_steps(trainer, model, kahan, inputs, args.warmup,
                                           args.repeats, device)
            except Exception as exc:
                rows[mode] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        _set_checkpointing(model, None)
        return [("kahan, no ckpt", rows[None]), ("kahan, selective ckpt", rows["selective"])]
    raise ValueError(name)


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
    parser.add_argument("--variants", nargs="*", default=[],
                        choices=["optimizer", "selective", "loop-copies", "compiled",
                                 "compiled-selective", "kahan"],
                        help="more rows after --every: the optimizer step alone, foreach "
                             "against per-tensor copies, interleaved; selective checkpointing; the optimizer's "
                             "former per-tensor master copies; compiled decoder layers; bf16 "
                             "Kahan AdamW (last: it replaces the fp32 optimizer)")
    parser.add_argument("--profile-best", action="store_true")
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
    for name in args.variants:
        for label, t in run_variant(name, trainer, model, optimizer, inputs, args, device):
            results["timings"][label] = gl.report(label, t, real, flops, peak)
        if args.json:  # after every variant: a run cut short keeps its rows
            with open(args.json, "w") as fh:
                json.dump(results, fh, indent=1, default=str)
        if name == "kahan":  # the fp32 optimizer is gone: later variants would need it
            break
    if args.profile_best:
        best = min((k for k, v in results["timings"].items() if "ms_per_step" in v),
                   key=lambda k: results["timings"][k]["ms_per_step"])
        print(f"-- best: {best}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
