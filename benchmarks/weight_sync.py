"""Weight sync time per optimizer step, relative to the step's time (goal: at most 5%).

Runs the real training loop (``mtgrpo.trainer.train.run``: vLLM rollouts over HTTP, the
synthetic code-lookup task, the tiny two-layer model) for a few steps and reads
``metrics.jsonl``: ``weight_sync_seconds`` (the push after each step) against ``step_seconds``
(rollouts + learner). Starts its own vLLM server (``--port``, default 8250) unless ``--url``
names a running one (started with mtgrpo's worker extension, see docs/rollouts.md).

    python benchmarks/weight_sync.py [--steps 8] [--url http://127.0.0.1:8201] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {gpu}, "
            f"torch {torch.__version__}, python {platform.python_version()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--url", default="", help="a running vLLM server (default: start one)")
    parser.add_argument("--port", type=int, default=8250)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)

    from mtgrpo.contract import TrainerConfig
    from mtgrpo.rollout.server import VLLMServer
    from mtgrpo.testing.synthetic import task_parser, write_task
    from mtgrpo.testing.tiny import build_tiny_model
    from mtgrpo.trainer.metrics_log import read_metrics
    from mtgrpo.trainer.paths import RunPaths
    from mtgrpo.trainer.train import run

    work = Path(tempfile.mkdtemp(prefix="mtgrpo-bench-sync-"))
    model_dir = build_tiny_model(work / "model")
    task = write_task(work / "task")
    server = None
    url = args.url
    if not url:
        server = VLLMServer(model_dir, port=args.port, gpu_memory_utilization=0.3,
                            log_path=work / "vllm.log")
        url = server.url
    try:
        if server is not None:
            server.start().wait_healthy(900)
        cfg = TrainerConfig(
            model_name_or_path=str(model_dir), generation_backend="vllm", vllm_server_url=url,
            weight_sync="auto", num_generations=4, per_device_train_batch_size=16,
            gradient_accumulation_steps=1, max_steps=args.steps, learning_rate=1e-3,
            eval_steps=0, save_steps=10_000, max_turns=2, max_tool_calls=1,
            max_tokens_per_turn=48, max_completion_length=160, search_max_tokens=48,
            bf16=False, gradient_checkpointing=False)
        out = work / "out"
        paths = RunPaths(str(model_dir), task / "train.jsonl", None, task / "corpus", out,
                         out / "model", out / "checkpoints")
        run(cfg, paths, parser=task_parser())
        rows = read_metrics(out / "metrics.jsonl")
    finally:
        if server is not None:
            server.stop()
    sync = [r["weight_sync_seconds"] for r in rows]
    step = [r["step_seconds"] for r in rows]
    result = {
        "machine": machine(),
        "model": "tiny Qwen2 (2 layers, hidden 128)",
        "steps": len(rows),
        "weight_sync_seconds_median": statistics.median(sync),
        "step_seconds_median": statistics.median(step),
        "ratio_median": statistics.median(s / t for s, t in zip(sync, step)),
        "ratio_total": sum(sync) / sum(step),
        "goal": "ratio <= 0.05",
    }
    for key, value in result.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
