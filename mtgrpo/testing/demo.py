"""A local demo that visibly learns: warm-start the tiny model, then train it with MT-GRPO.

    python -m mtgrpo.testing.demo --output out/demo      # a few minutes on 2 CPU cores
    mtgrpo plot out/demo --output out/demo/curves.png

Builds the tiny model and the synthetic code-lookup task (``recipes/local/``'s), starts one
vLLM CPU server, runs the supervised warm start of ``tests/test_learning.py``
(:mod:`mtgrpo.testing.warm_start`: a policy that can use the search tool but has not learned
what to search for, about 30 % success) and then ``train.run`` with vLLM rollouts and a weight
sync every step, as ``mtgrpo train`` does: the printed ``mtgrpo-metrics:`` lines, ``metrics.jsonl``
and the TensorBoard events show reward and exact match rising. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

GRPO_LR = 2e-4  # tests/test_learning.py's: 5e-4 once collapsed (docs/trainer.md)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtgrpo.testing.demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True,
                        help="run directory: metrics.jsonl, tensorboard/, model/, vllm.log")
    parser.add_argument("--algorithm", default="mt_grpo", choices=("mt_grpo", "grpo_or"))
    parser.add_argument("--steps", type=int, default=15, help="GRPO steps (default 15)")
    parser.add_argument("--mlflow-uri", default="", help="also log the run to this MLflow "
                                                         "tracking server (docs/metrics.md)")
    parser.add_argument("--experiment", default="mtgrpo-demo",
                        help="MLflow experiment (default mtgrpo-demo): run the demo once per "
                             "--algorithm into one experiment to compare them side by side")
    args = parser.parse_args(argv)
    out = args.output.resolve()
    if (out / "metrics.jsonl").exists():
        sys.exit(f"error: {out}/metrics.jsonl exists: choose a new --output directory")
    out.mkdir(parents=True, exist_ok=True)

    from mtgrpo.contract import TrainerConfig
    from mtgrpo.rollout.server import VLLMServer
    from mtgrpo.testing.synthetic import task_parser, write_task
    from mtgrpo.testing.tiny import build_tiny_model
    from mtgrpo.testing.warm_start import TEMPERATURE, warm_start
    from mtgrpo.trainer.paths import RunPaths
    from mtgrpo.trainer.train import run

    started = time.perf_counter()
    model_dir = build_tiny_model(out / "work" / "tiny-model", seed=0)
    task = write_task(out / "work" / "task")
    server = VLLMServer(model_dir, port=_free_port(), gpu_memory_utilization=0.3,
                        log_path=out / "vllm.log")
    print(f"starting vLLM server on {server.url} (log: {out / 'vllm.log'})", flush=True)
    try:
        server.start().wait_healthy(900)
        print(f"server up after {time.perf_counter() - started:.0f} s; warm start", flush=True)
        warm = warm_start(model_dir, task, server.url, out / "work" / "warm-model",
                          out / "work", progress=lambda line: print(line, flush=True))
        print(warm.summary(), flush=True)
        config = TrainerConfig(
            model_name_or_path=str(warm.model_dir), generation_backend="vllm",
            vllm_server_url=server.url, weight_sync="reload", vllm_request_timeout_s=120,
            algorithm=args.algorithm, num_generations=4, per_device_train_batch_size=32,
            gradient_accumulation_steps=1, max_steps=args.steps, num_epochs=100,
            learning_rate=GRPO_LR, max_grad_norm=1.0, temperature=TEMPERATURE, eval_steps=5,
            max_eval_samples=6, save_steps=10_000, max_turns=2, max_tool_calls=1,
            max_tokens_per_turn=40, max_completion_length=128, search_max_tokens=32,
            reward_format=0.0, reward_xml_count=0.0, seed=0)
        paths = RunPaths(str(warm.model_dir), task / "train.jsonl", task / "eval.jsonl",
                         task / "corpus", out, out / "model", out / "checkpoints")
        tracking = None
        if args.mlflow_uri:
            from mtgrpo.tracking.settings import MlflowSettings, TrackingSettings

            tracking = TrackingSettings(mlflow=MlflowSettings(args.mlflow_uri, args.experiment),
                                        recipe="local-demo")
        summary = run(config, paths, parser=task_parser(), resume=False, tracking=tracking)
    finally:
        server.stop()
    summary["warm_start"] = {"skill": warm.skill, "calibration": warm.calibration,
                             "seconds": round(warm.seconds, 1)}
    summary["demo_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary, indent=2, sort_keys=True, default=str))
    print(f"curves: mtgrpo plot {args.output} --output {args.output / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
