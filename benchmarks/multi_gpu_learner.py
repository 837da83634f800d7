"""The real training loop (``MTGRPOTrainer.train()``) on one or more GPUs, with synthetic rollouts.

Rollouts are replaced by a deterministic function of each question (random token ids of realistic
multi-turn lengths, tool results masked out of the loss), so the same steps can be run on one GPU
and on several, through ``accelerate launch`` with the shipped DeepSpeed configs, and compared.
Each run writes per-step loss, grad norm, entropy, step time and peak memory per GPU as JSON;
``--compare`` prints them side by side.

    accelerate launch --num_processes 1 benchmarks/multi_gpu_learner.py --out one.json
    accelerate launch --num_processes 2 --use_deepspeed --deepspeed_config_file \\
        mtgrpo/sagemaker/deepspeed/zero2.json benchmarks/multi_gpu_learner.py --stage 2 --out z2.json
    python benchmarks/multi_gpu_learner.py --compare one.json z2.json

``--tiny``: a tiny model on CPU (``accelerate launch --cpu``), to check the script.
The global batch is the same for any process count: ``--groups`` prompts of ``--per-group``
completions per step, split evenly over the processes (whole groups per process).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_learner import FULL, TINY  # noqa: E402  (the same model shapes)


def synthetic_rollout(scale: float, max_completion: int, vocab: int):
    """``records -> episodes``: the k-th rollout of a question is a fixed function of (id, k)."""
    from mtgrpo.trainer.types import Episode, Turn

    counts: dict[str, int] = {}

    def n(rng, lo, hi):
        return max(1, round(rng.randint(lo, hi) * scale))

    def rollout(records):
        out = []
        for record in records:
            k = counts.get(record.id, 0)
            counts[record.id] = k + 1
            prompt_rng = random.Random(f"prompt-{record.id}")
            prompt = [prompt_rng.randrange(3, vocab) for _ in range(n(prompt_rng, 180, 260))]
            rng = random.Random(f"{record.id}-{k}")
            kind = rng.choices(["answer", "search", "two"], weights=[2, 6, 2])[0]
            plan = {"answer": [(30, 300, False)],
                    "search": [(40, 160, False), (200, 512, True), (20, 250, False)],
                    "two": [(40, 160, False), (200, 512, True), (40, 160, False), (200, 512, True),
                            (20, 250, False)]}[kind]
            turns, total = [], 0
            for lo, hi, env in plan:
                length = min(n(rng, lo, hi), max_completion - total)
                if length <= 0:
                    break
                ids = [rng.randrange(3, vocab) for _ in range(length)]
                turns.append(Turn(role="tool" if env else "assistant", text="", token_ids=ids,
                                  logprobs=None if env else [-1.0] * length, tool_ok=True if env else None))
                total += length
            out.append(Episode(record=record, prompt_ids=prompt, turns=turns))
        return out

    return rollout


def synthetic_score(episode):
    from mtgrpo.trainer.types import RewardBreakdown

    rng = random.Random(sum(episode.completion_ids) * 31 + len(episode.completion_ids))
    turn, outcome = rng.random() * 0.7, rng.random() * 2.0
    return RewardBreakdown(turn=turn, outcome=outcome, components={"exact_match": float(outcome > 1.5)})


class StepRecorder:
    """Per optimizer step: wall time, and on CUDA the peak memory of this process's GPU."""

    def __init__(self):
        from transformers import TrainerCallback

        recorder = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                recorder.begin()

            def on_step_end(self, args, state, control, **kwargs):
                recorder.end()
                control.should_save = False  # a 1.7B checkpoint with optimizer state is ~17 GB


        self.callback = _Callback()
        self.times: list[float] = []
        self.peaks: list[float] = []
        self.at_begin: list[float] = []  # GiB allocated when a step starts: weights, optimizer, anything kept
        self._t0 = 0.0

    def begin(self):
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.at_begin.append(torch.cuda.memory_allocated() / 2 ** 30)
            torch.cuda.reset_peak_memory_stats()
        self._t0 = time.perf_counter()

    def end(self):
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.peaks.append(torch.cuda.max_memory_allocated() / 2 ** 30)
        self.times.append(time.perf_counter() - self._t0)


def live_cuda_tensors(model, top: int = 12) -> list[str]:
    """The largest live CUDA tensors other than parameters and their gradients (what a step keeps)."""
    import gc
    from collections import Counter

    import torch

    params = list(model.parameters())
    skip = {id(p) for p in params} | {id(p.grad) for p in params if p.grad is not None}
    sizes: Counter = Counter()
    counts: Counter = Counter()
    for obj in gc.get_objects():
        try:
            if isinstance(obj, torch.Tensor) and obj.is_cuda and id(obj) not in skip:
                key = (tuple(obj.shape), str(obj.dtype), obj.requires_grad or obj.grad_fn is not None)
                sizes[key] += obj.numel() * obj.element_size()
                counts[key] += 1
        except Exception:  # noqa: BLE001 - some objects refuse isinstance checks
            continue
    return [f"{counts[k]} x {k[0]} {k[1]}{' (autograd)' if k[2] else ''}: {v / 2 ** 30:.2f} GiB"
            for k, v in sizes.most_common(top)]


def train(args) -> dict:
    import torch
    from accelerate import PartialState
    from accelerate.utils import gather_object
    from transformers import Qwen3Config, Qwen3ForCausalLM, set_seed

    from mtgrpo.contract import TrainerConfig
    from mtgrpo.testing.tiny import build_tokenizer
    from mtgrpo.trainer.grpo_trainer import MTGRPOTrainer
    from mtgrpo.trainer.paths import RunPaths
    from mtgrpo.trainer.train import grpo_args
    from mtgrpo.trainer.types import QARecord

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    state = PartialState()
    world = int(os.environ.get("WORLD_SIZE", state.num_processes))
    if (args.groups * args.per_group) % (world * args.per_group):
        raise SystemExit(f"{args.groups} groups do not split into whole groups over {world} processes")
    per_device = args.groups * args.per_group // world
    cuda = torch.cuda.is_available() and not args.tiny
    scale = 1 / 16 if args.tiny else 1.0
    max_completion = max(8, round(1536 * scale))
    tokenizer = build_tokenizer()

    set_seed(0)
    config = Qwen3Config(**(TINY if args.tiny else FULL), attn_implementation="sdpa")
    dtype = torch.bfloat16 if cuda else torch.float32
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:  # the same seed on every process gives the same random weights
        with torch.device(state.device if cuda else "cpu"):
            model = Qwen3ForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    weight_sum = float(sum(p.float().sum() for p in model.parameters()))
    if state.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    root = Path(tempfile.mkdtemp(prefix="mgl-"))
    trainer_config = TrainerConfig(
        model_name_or_path="random", seed=0, max_steps=args.steps, learning_rate=args.lr,
        per_device_train_batch_size=per_device, gradient_accumulation_steps=1,
        num_generations=args.per_group, max_completion_length=max_completion, bf16=cuda,
        deepspeed_stage=args.stage, logging_steps=1, max_tokens_per_turn=min(256, max_completion),
        save_steps=10 ** 6, eval_steps=0,
        warmup_ratio=0.0, gradient_checkpointing=False)
    paths = RunPaths(model="random", train_file=root / "train.jsonl", eval_file=None,
                     corpus_dir=root / "corpus", output_dir=root / "out", model_dir=root / "model",
                     checkpoint_dir=root / "ckpt")
    records = [QARecord(id=str(i), question=f"q{i}", aliases=("a",)) for i in range(256)]
    recorder = StepRecorder()
    trainer = MTGRPOTrainer(
        model, grpo_args(trainer_config, paths, world_size=world, use_cuda=cuda),
        processing_class=tokenizer, config=trainer_config, train_records=records,
        rollout=synthetic_rollout(scale, max_completion, min(len(tokenizer), config.vocab_size)),
        scorer=synthetic_score,
        callbacks=[recorder.callback])
    if trainer.accelerator.num_processes != world:
        raise SystemExit(f"trainer runs {trainer.accelerator.num_processes} processes, launched {world}")
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    kept = live_cuda_tensors(model) if cuda and args.debug_memory else []
    peaks = gather_object([recorder.peaks])
    at_begin = gather_object([recorder.at_begin])
    result = {
        "world_size": world, "deepspeed_stage": args.stage,
        "distributed": str(trainer.accelerator.distributed_type),
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "model": "tiny Qwen3" if args.tiny else "Qwen3-1.7B shape, random weights, bf16",
        "global_batch": f"{args.groups} prompts x {args.per_group} completions",
        "weight_sum_at_start": weight_sum,
        "steps": [{k: entry.get(k) for k in ("step", "loss", "grad_norm", "entropy", "step_time")}
                  for entry in logs],
        "step_seconds": recorder.times,
        "peak_gib_per_gpu": peaks if cuda else None,
        "allocated_gib_at_step_start_per_gpu": at_begin if cuda else None,
        "live_cuda_tensors_after_training": kept,
        "torch": torch.__version__,
        # mtgrpo_packed_sdpa once ChunkedLogprobsMixin has packed a batch
        "attn_implementation": trainer.accelerator.unwrap_model(trainer.model).config._attn_implementation,
        "trainer_bases": [c.__name__ for c in type(trainer).__mro__[:3]],
    }
    if state.is_main_process and args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


def compare(files: list[str]) -> int:
    present = [f for f in files if Path(f).is_file()]
    for f in files:
        if f not in present:
            print(f"{f}: missing (that run failed; see its log)")
    if not present:
        return 1
    files = present
    runs = [json.loads(Path(f).read_text()) for f in files]
    base = runs[0]
    print(f"device: {base['device']}; model: {base['model']}; global batch {base['global_batch']}")
    for run, name in zip(runs, files):
        stage = run["deepspeed_stage"]
        label = f"{run['world_size']} GPU(s)" + (f", ZeRO-{stage}" if stage else "")
        times = run["step_seconds"][1:] or run["step_seconds"]  # the first step includes warm-up
        peaks = run["peak_gib_per_gpu"]
        peak = ", ".join(f"{max(p):.1f}" for p in peaks) if peaks else "n/a"
        print(f"\n{label} ({name}): median step {1000 * sorted(times)[len(times) // 2]:.0f} ms "
              f"(steps 2+), peak GiB per GPU: {peak}")
        for s, b in zip(run["steps"], base["steps"]):
            diffs = ", ".join(f"{k} {s[k]:.5g} (1-GPU {b[k]:.5g})" for k in ("loss", "grad_norm", "entropy")
                              if s.get(k) is not None and b.get(k) is not None)
            print(f"  step {s['step']}: {diffs}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--groups", type=int, default=4, help="prompts per step (global)")
    parser.add_argument("--per-group", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--stage", type=int, default=0, help="DeepSpeed ZeRO stage of this launch (0: none)")
    parser.add_argument("--debug-memory", action="store_true",
                        help="list the largest live CUDA tensors after training")
    parser.add_argument("--out")
    parser.add_argument("--compare", nargs="+")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(args.compare)
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
