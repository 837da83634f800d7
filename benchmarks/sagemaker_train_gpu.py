"""A real job on one GPU: ``python -m mtgrpo.sagemaker train``, then the learner benchmark at its shape.

Issue 14's check that what the benchmark measures is what a job runs. It

1. builds the Qwen3-1.7B shape with random weights (and the test tokenizer) as the ``model``
   channel, lays out ``/opt/ml`` as SageMaker does (the QA and corpus fixtures as channels) and
   runs the container's entry point, ``python -m mtgrpo.sagemaker train``, with the trainer's
   defaults (Liger auto, master weights auto, checkpointing on) and transformers rollouts on the
   same GPU, for ``--steps`` steps of 16 episodes (4 prompts x 4);
2. reads the job's log (its start line says whether Liger is on) and its metrics: per step the
   learner's seconds (``step_seconds`` - ``rollout_seconds``) and tokens;
3. in this process, once the job has ended, times ``gpu_learner``'s learner step (the trainer's
   own default path, as ``benchmarks/gpu_learner.py`` and ``profile_learner.py`` build it) on a
   synthetic batch of the job's shape: 16 episodes with the job's mean prompt and completion
   lengths, so both count the same tokens.

It prints both and their ratio. The job's learner time also holds what the benchmark leaves
out (scoring, advantages, metric gathering, TRL's batch preparation).

    python benchmarks/sagemaker_train_gpu.py [--steps 6] [--json out.json]
    python benchmarks/sagemaker_train_gpu.py --tiny      # tiny model on CPU: checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import gpu_learner as gl  # noqa: E402  the model shape, batch builder and learner step


def build_model_dir(root: Path, tiny: bool) -> Path:
    import torch

    from mtgrpo.testing.tiny import build_tokenizer

    out = root / "model"
    if tiny:  # the tests' tiny model: its vocabulary is the tokenizer's
        from mtgrpo.testing.tiny import build_tiny_model

        build_tiny_model(out)
        return out
    model = gl.build(False, "cuda")
    model.save_pretrained(out)
    build_tokenizer().save_pretrained(out)
    del model
    torch.cuda.empty_cache()
    return out


def job_config(model_dir: Path, args):
    from mtgrpo.contract import TrainerConfig

    scale = 1 / 16 if args.tiny else 1
    return TrainerConfig(
        model_name_or_path=str(model_dir), generation_backend="transformers",
        max_steps=args.steps, num_generations=4, per_device_train_batch_size=16,
        gradient_accumulation_steps=1, max_turns=2, max_tool_calls=1,
        max_tokens_per_turn=max(8, round(256 * scale)),
        max_completion_length=max(16, round(1536 * scale)), eval_steps=0, save_steps=10 ** 6,
        logging_steps=1, loss_type="dapo", bf16=not args.tiny,
        gradient_checkpointing=not args.tiny)


def run_job(root: Path, config, model_dir: Path, timeout: float) -> tuple[int | None, str]:
    from opt_ml import FIXTURES, lay_out, start_train, wait_then_kill

    lay_out(root, config.to_hyperparameters(), channels={
        "train": FIXTURES / "qa" / "train.jsonl", "corpus": FIXTURES / "corpus",
        "model": model_dir})
    log = root / "job.log"
    env = {**os.environ, "MTGRPO_OPT_ML": str(root)}
    start = time.perf_counter()
    try:
        code = wait_then_kill(start_train(env, log), timeout)
    except subprocess.TimeoutExpired:
        code = None
    print(f"job: exit {code} after {time.perf_counter() - start:.0f} s")
    return code, log.read_text(errors="replace")


def job_steps(root: Path) -> list[dict]:
    path = root / "output" / "data" / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] \
        if path.exists() else []
    return [r for r in rows if "step_seconds" in r]


def learner_rows(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        learn = r["step_seconds"] - r.get("rollout_seconds", 0.0)
        out.append({"step": r.get("step"), "step_s": r["step_seconds"],
                    "rollout_s": r.get("rollout_seconds", 0.0), "learn_s": learn,
                    "tokens": r["tokens_per_second"] * learn,
                    "completion_mean": r.get("completions_mean_length")})
    return out


def bench_same_shape(model_dir: Path, config, prompt_len: int, completion_len: int, args):
    """The benchmark's learner step (trainer default path) on 16 episodes of the job's lengths."""
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    trainer, _cfg, optimizer = gl.default_trainer(str(model_dir), 16, 4,
                                                  config.max_completion_length)
    model = trainer.model
    eps = [gl.Episode(prompt_len, [(completion_len, False)]) for _ in range(16)]
    inputs = gl.make_inputs(eps, 4, model.config.vocab_size, device, seed=2)
    # Prompts of one length would leave no padding, and a batch without padding takes TRL's
    # path: give each group its own prompt length around the mean, as the job's questions have.
    for group in range(4):
        cut = group * 2
        if cut:
            rows = slice(group * 4, group * 4 + 4)
            inputs["prompt_mask"][rows, :cut] = 0
            inputs["prompt_ids"][rows, :cut] = 0
    inputs["old_per_token_logps"] = None
    t = gl.time_steps(trainer, model, optimizer, inputs, args.warmup, args.repeats, device)
    flops = gl.flops_per_step(model.config, inputs)
    t["real_tokens"] = flops["real_tokens"]
    t["liger"] = list(getattr(model, "mtgrpo_liger_kernels", []))
    t["master_weights"] = trainer.master_weights.name
    return t


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=420)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="sm-train-gpu-"))
    model_dir = build_model_dir(root, args.tiny)
    config = job_config(model_dir, args)
    code, log = run_job(root / "opt_ml", config, model_dir, args.timeout)
    start_lines = [line for line in log.splitlines() if "liger kernels:" in line]
    print("job start line:", start_lines[0].strip() if start_lines else "(none: see the log)")
    rows = learner_rows(job_steps(root / "opt_ml"))
    if code != 0 or len(rows) < 2:
        print(log[-4000:])
        return 1
    for r in rows:
        print(f"  step {r['step']}: step {r['step_s']:.3f} s, rollout {r['rollout_s']:.3f} s, "
              f"learner {r['learn_s']:.3f} s, {r['tokens']:.0f} tokens, completion mean "
              f"{r['completion_mean']}")
    later = rows[1:]  # the first step pays compilation and allocator warm-up
    learn = statistics.median(r["learn_s"] for r in later)
    tokens = statistics.median(r["tokens"] for r in later)
    completion = round(statistics.median(r["completion_mean"] or 1 for r in later))
    prompt = max(1, round(tokens / 16 - completion) + 3)  # +3: the groups' prompt spread below
    bench = bench_same_shape(model_dir, config, prompt, completion, args)
    bench_s = bench["ms_per_step"] / 1000
    result = {"job": {"exit": code, "start_line": start_lines[0].strip() if start_lines else None,
                      "steps": rows, "median_learn_s": learn, "median_tokens": tokens,
                      "tokens_per_s": tokens / learn},
              "bench": bench | {"tokens_per_s": bench["real_tokens"] / bench_s},
              "job_over_bench": learn / bench_s * bench["real_tokens"] / tokens}
    print(f"job learner: {learn * 1000:.1f} ms/step, {tokens:.0f} tokens, "
          f"{tokens / learn:.0f} tokens/s")
    print(f"benchmark at the job's shape: {bench['ms_per_step']:.1f} ms/step, "
          f"{bench['real_tokens']:.0f} tokens, {bench['real_tokens'] / bench_s:.0f} tokens/s "
          f"(liger {bench['liger'] or 'off'}, master weights {bench['master_weights']})")
    print(f"job / benchmark, per token: {result['job_over_bench']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
