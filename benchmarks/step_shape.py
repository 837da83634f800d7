"""The real training step at its multi-turn shape: rollouts, learner, weight sync, per step.

A random model never calls the tool, so a job run with one (``benchmarks/fit.py``,
``benchmarks/sagemaker_train_gpu.py``) samples one turn per episode; real episodes have up to
``max_turns`` turns with tool results between them. This benchmark runs the real loop
(``mtgrpo.trainer.train.run``: TRL's trainer, the transformers sampler on the training GPU,
the environment, rewards, the learner) with the recipe's hyperparameters, on a model of the
recipe's shape with random weights, and forces the episode shape at fixed points:

- every assistant turn but the last samples ``--call-tokens`` tokens with the real sampler
  (the compiled decode, the recipe's temperature), of which the last ones are replaced by a
  well-formed tool call (``<tool>{"name": "wiki_search", ...}</tool>``), so the parser sees a
  call and the environment runs it;
- every tool call returns a result of ``--result-tokens`` filler words (single tokens of the
  local tokenizer), framed by the chat template as any result;
- the last turn samples up to the rest of the budget (``min(max_tokens_per_turn,
  max_completion_length - used)``) and, the model being random, uses all of it.

So each episode is prompt, call turn, result, call turn, result, answer turn: the recipe's
three-turn shape with ``max_tool_calls`` 2. Questions are padded with filler words so prompts
are about ``--prompt-words`` long, 8 words apart between groups (left padding, as in a run).

Per optimizer step it reports the rollout, learner and weight-sync seconds (the trainer's own
metrics), sampled tokens per second of the sampler, the share of the rollouts' memory-bandwidth
bound (every decode step reads the weights once plus the KV cache of its rows; prefills at the
card's dense bf16 peak), prompt tokens (the episodes' contexts) and prefill tokens (what the
sampler computed of them: only the new ones where it continued the rows in its cache), the
peak GPU
memory of the step, and the compilations (dynamo graphs) made during the step. Each variant
(``--variants``: ``full``, ``lora``: ``lora_r`` 16, ``lora-unmerged``: LoRA sampled through
its adapters instead of merged weights) runs in a child process of its own (fresh compile
caches and memory).

    python benchmarks/step_shape.py --tiny                     # CPU smoke test (~1 min)
    python benchmarks/step_shape.py --cap-gib 22 --steps 5 --json step_shape.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

VARIANTS = {"full": {}, "lora": {"lora_r": 16}, "lora-unmerged": {"lora_r": 16}}
# Dense bf16 peak (TFLOP/s) and memory bandwidth (GB/s) by device name, for the bound.
CARDS = {"H200": (989.4, 4800), "H100": (989.4, 3350), "A100": (312.0, 2039),
         "A10G": (125.0, 600), "L4": (121.0, 300), "L40S": (362.0, 864)}
CALL = '<tool>\n{"name": "wiki_search", "args": {"query": "code of bravo"}}\n</tool>'


# -- the forced episode shape (child process) ---------------------------------------------------

class Shape:
    """What the patched sampler and environment force, and what they saw."""

    def __init__(self, call_tokens: int, result_tokens: int, filler: list[str]):
        self.call_tokens = call_tokens
        self.result = " ".join(filler[i % len(filler)] for i in range(result_tokens))
        self.turn = 0
        self.calls: list[dict] = []  # one per sampler call of the current optimizer step

    def reset_step(self) -> list[dict]:
        calls, self.calls = self.calls, []
        return calls


def patch(shape: Shape, max_turns: int) -> None:
    """Force the episode shape through the real classes (see the module docstring)."""
    import time as _time

    from mtgrpo.rollout import sampler as sampler_mod
    from mtgrpo.rollout.client import Sample
    from mtgrpo.trainer import environment as env_mod

    base = sampler_mod.TransformersSampler
    merge = os.environ.get("STEP_SHAPE_MERGE_LORA", "1") == "1"

    class ForcedTurns(base):
        def __init__(self, *args, **kwargs):
            if "merge_lora" in base.__init__.__code__.co_varnames:
                kwargs.setdefault("merge_lora", merge)
            super().__init__(*args, **kwargs)
            self._call_ids = self.tokenizer.encode(CALL, add_special_tokens=False)

        def generate_sync(self, prompts, budgets, temperature, top_p, stop, seed=None):
            turn = shape.turn
            shape.turn += 1
            calling = turn < max_turns - 1
            if calling:
                budgets = [min(b, shape.call_tokens) for b in budgets]
            t0 = _time.perf_counter()
            samples = super().generate_sync(prompts, budgets, temperature, top_p, stop, seed)
            seconds = _time.perf_counter() - t0
            shape.calls.append({"turn": turn, "rows": len(prompts), "budgets": list(budgets),
                                "prompt_lengths": [len(p) for p in prompts],
                                "sampled": sum(len(s.token_ids) for s in samples),
                                "seconds": seconds,
                                "sync_seconds": getattr(self, "last_sync_seconds", 0.0),
                                "prefilled": getattr(self, "last_prefill_tokens",
                                                     sum(len(p) for p in prompts)),
                                "batches": list(self.last_batches)})
            if not calling:
                return samples
            out = []
            for s, budget in zip(samples, budgets):
                keep = max(0, budget - len(self._call_ids))
                ids = list(s.token_ids[:keep]) + self._call_ids
                out.append(Sample(ids, None, self.tokenizer.decode(ids), "stop"))
            return out

    class ForcedEnvironment(env_mod.ToolEnvironment):
        async def rollout(self, *args, **kwargs):
            shape.turn = 0
            return await super().rollout(*args, **kwargs)

        def _call_tool(self, parsed):
            return shape.result, True

    sampler_mod.TransformersSampler = ForcedTurns
    env_mod.ToolEnvironment = ForcedEnvironment


def compile_count() -> int:
    """Graphs dynamo has compiled in this process so far."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return 0
    return int(counters["stats"]["unique_graphs"])


def rollout_bound(calls: list[dict], model_shape, weight_bytes: int, card) -> float | None:
    """Seconds the step's sampler calls need at least: per decode step the weights once plus
    every row's KV cache so far, at the card's bandwidth; prefills at its dense bf16 peak."""
    if card is None:
        return None
    tflops, gbs = card
    kvb = model_shape.kv_bytes_per_token()
    seconds = 0.0
    for c in calls:
        steps = max(c["budgets"])
        kv = sum(kvb * (p * steps + steps * (steps - 1) / 2) for p in c["prompt_lengths"])
        seconds += (steps * weight_bytes + kv) / (gbs * 1e9)
        # the prefill: the tokens the sampler had to compute (the new ones where it continued
        # the rows in its cache), at the dense peak
        seconds += 2 * weight_bytes / 2 * c["prefilled"] / (tflops * 1e12)
    return seconds


class StepProbe:
    """A TrainerCallback: per step, peak memory, compilations and the sampler calls."""

    def __init__(self, shape: Shape, device: str):
        self.shape = shape
        self.device = device
        self.rows: list[dict] = []
        self._compiles = compile_count()

    def on_step_begin(self, args, state, control, **kwargs):
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()

    def on_step_end(self, args, state, control, **kwargs):
        row = {"step": state.global_step, "calls": self.shape.reset_step()}
        now = compile_count()
        row["compilations"] = now - self._compiles
        self._compiles = now
        if self.device == "cuda":
            import torch

            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        self.rows.append(row)


def write_data(directory: Path, words: int, filler: list[str]) -> None:
    """The synthetic task (its corpus for wiki_search), questions padded to about ``words``
    filler words, 8 fewer for each next record (prompts differ in length, as in a run)."""
    from mtgrpo.testing.synthetic import write_task

    write_task(directory, seed=0, n_eval=6)
    for name in ("train.jsonl", "eval.jsonl"):
        path = directory / name
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for k, row in enumerate(rows):
            n = max(1, words - 8 * (k % 4))
            row["question"] = " ".join(filler[i % len(filler)] for i in range(n)) + " " + \
                row["question"]
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def run_child(spec: dict) -> dict:
    import torch

    import fit
    from mtgrpo.plan.instances import instance
    from mtgrpo.plan.shapes import ModelShape, resolve_shape
    from mtgrpo.recipes import load_recipe
    from mtgrpo.testing.tiny import build_tokenizer
    from mtgrpo.trainer.paths import RunPaths
    from mtgrpo.trainer.train import run

    tiny = spec["tiny"]
    device = "cuda" if torch.cuda.is_available() and not tiny else "cpu"
    recipe = load_recipe(Path(spec["recipe"]), root=REPO)
    config = recipe.trainer.replace(**spec["overrides"])
    filler = fit.FILLER
    tokenizer = build_tokenizer(" ".join(filler))
    if tiny:
        shape = ModelShape(name="tiny", vocab=len(tokenizer), **fit.TINY_SHAPE)
        # max_prompt_length: the whole system prompt in the tiny tokenizer (longer is refused)
        config = config.replace(per_device_train_batch_size=2, gradient_accumulation_steps=2,
                                num_generations=4, max_prompt_length=640,
                                max_completion_length=224, max_tokens_per_turn=40,
                                bf16=False, gradient_checkpointing=False)
    else:
        shape = resolve_shape(config.model_name_or_path)
    inst = instance(recipe.job["instance_type"])
    if config.master_weights == "auto" and not tiny and inst is not None:
        # Resolve as the recipe's GPU would (the trainer would resolve by the card it sees).
        from mtgrpo.plan.memory import adapter_params, resolve_master_weights

        trainable = 0 if adapter_params(config, shape) else shape.params
        config = config.replace(master_weights=resolve_master_weights(
            config, zero_stage=0, trainable_bf16=trainable, gpu_bytes=inst.gpu_memory_bytes))
    config = config.replace(max_steps=spec["steps"], eval_steps=0, save_steps=10 ** 6,
                            logging_steps=1, seed=0, generation_backend="transformers")
    result = {"variant": spec["variant"], "device": device, "shape": shape.name,
              "config": {k: getattr(config, k) for k in (
                  "per_device_train_batch_size", "gradient_accumulation_steps",
                  "num_generations", "max_prompt_length", "max_completion_length",
                  "max_tokens_per_turn", "max_turns", "max_tool_calls", "gradient_checkpointing",
                  "master_weights", "lora_r", "temperature", "sampler_compile")},
              "forced": {"call_tokens": spec["call_tokens"],
                         "result_tokens": spec["result_tokens"],
                         "prompt_words": spec["prompt_words"]},
              "merge_lora": os.environ.get("STEP_SHAPE_MERGE_LORA", "1") == "1"}
    card = None
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        result["card"] = name
        card = next((v for k, v in CARDS.items() if k in name), None)
        if spec.get("cap_gib"):
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(spec["cap_gib"] * 2**30 / total)
            result["cap_gib"] = spec["cap_gib"]
    forced = Shape(spec["call_tokens"], spec["result_tokens"], filler)
    patch(forced, config.max_turns)
    probe = StepProbe(forced, device)
    with tempfile.TemporaryDirectory(prefix="mtgrpo-step-") as tmp:
        root = Path(tmp)
        fit.build_model(shape, root / "model", device, tokenizer=tokenizer)
        write_data(root / "data", spec["prompt_words"], filler)
        paths = RunPaths(model=str(root / "model"), train_file=root / "data" / "train.jsonl",
                         eval_file=root / "data" / "eval.jsonl",
                         corpus_dir=root / "data" / "corpus", output_dir=root / "out",
                         model_dir=root / "out" / "model", checkpoint_dir=root / "ckpt")
        started = time.perf_counter()
        run(config, paths, resume=False, callbacks=[_Callback(probe)])
        result["seconds"] = round(time.perf_counter() - started, 1)
        metrics = [json.loads(line) for line in
                   (root / "out" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    metrics = [m for m in metrics if "step_seconds" in m]
    weight_bytes = shape.params * 2 if not tiny else shape.params * 4
    steps = []
    for m, p in zip(metrics, probe.rows):
        calls = p["calls"]
        sampled = sum(c["sampled"] for c in calls)
        sampler_s = sum(c["seconds"] for c in calls)
        bound = rollout_bound(calls, shape, weight_bytes, card)
        row = {"step": m.get("step", p["step"]), "step_s": round(m["step_seconds"], 3),
               "rollout_s": round(m.get("rollout_seconds", 0.0), 3),
               "learner_s": round(m["step_seconds"] - m.get("rollout_seconds", 0.0), 3),
               "weight_sync_s": round(m.get("weight_sync_seconds", 0.0)
                                      + sum(c["sync_seconds"] for c in calls), 4),
               "sampler_calls": len(calls), "sampled_tokens": sampled,
               "prompt_tokens": sum(sum(c["prompt_lengths"]) for c in calls),
               "prefill_tokens": sum(c["prefilled"] for c in calls),
               "sampled_tokens_per_s": round(sampled / sampler_s, 1) if sampler_s else None,
               "learner_tokens_per_s": round(m.get("tokens_per_second", 0.0), 1),
               "compilations": p["compilations"], "peak_gib": p.get("peak_gib"),
               "turn_rows": [c["rows"] for c in calls],
               "mean_prompt": round(statistics.mean(
                   x for c in calls for x in c["prompt_lengths"]), 1) if calls else None}
        if bound:
            row["bound_s"] = round(bound, 4)
            row["share_of_bound"] = round(bound / sampler_s, 4)
        steps.append(row)
    result["steps"] = steps
    later = steps[1:] or steps
    result["steady"] = {k: round(statistics.median(r[k] for r in later), 4) for k in (
        "step_s", "rollout_s", "learner_s", "weight_sync_s", "sampled_tokens_per_s",
        "learner_tokens_per_s", "sampled_tokens") if all(r.get(k) is not None for r in later)}
    if all("share_of_bound" in r for r in later):
        result["steady"]["share_of_bound"] = round(statistics.median(
            r["share_of_bound"] for r in later), 4)
    result["planner"] = planner_prediction(shape, config, result.get("card"), probe.rows,
                                           spec["call_tokens"])
    result["first_step_s"] = steps[0]["step_s"] if steps else None
    result["compilations"] = sum(r["compilations"] for r in steps)
    result["peak_gib"] = max((r["peak_gib"] or 0 for r in steps), default=None)
    return result


def planner_prediction(shape, config, card: str | None, rows: list[dict],
                       call_tokens: int) -> dict | None:
    """``mtgrpo plan``'s step for this card (mtgrpo/plan/timing.py) at the measured first-turn
    prompt length; comparable when every turn used its whole budget (``--call-tokens`` =
    ``max_tokens_per_turn``)."""
    from mtgrpo.plan.timing import load_throughput, step_time

    table = load_throughput()
    row = next((table.gpus[k] for k in table.gpus if card and k in card), None)
    first = [x for r in rows for c in r["calls"] if c["turn"] == 0 for x in c["prompt_lengths"]]
    if row is None or not first:
        return None
    step = step_time(shape, config, row, table.defaults, world_size=1, hosts=1, vllm_gpus=0,
                     lora=bool(config.lora_r), prompt_tokens=round(statistics.mean(first)))
    return {"row": row.gpu, "source": row.source, "step_s": round(step.step_s, 3),
            "rollout_s": round(step.rollout_s, 3), "learner_s": round(step.learner_s, 3),
            "same_shape": call_tokens >= config.max_tokens_per_turn}


def _Callback(probe):
    """``probe`` as a real ``TrainerCallback`` (transformers checks the type)."""
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            probe.on_step_begin(args, state, control)

        def on_step_end(self, args, state, control, **kwargs):
            probe.on_step_end(args, state, control)

    return Probe()


# -- the parent ---------------------------------------------------------------------------------

def report(results: list[dict]) -> str:
    lines = []
    for r in results:
        if "error" in r:
            lines.append(f"{r['variant']}: {r['error']}")
            continue
        lines.append(f"== {r['variant']} on {r.get('card', r['device'])}"
                     f" (cap {r.get('cap_gib')} GiB): first step {r['first_step_s']} s, "
                     f"{r['compilations']} compilations, peak {r['peak_gib']} GiB")
        lines.append(f"{'step':>4} {'step s':>7} {'rollout':>8} {'learner':>8} {'sync':>7} "
                     f"{'sampled':>8} {'prefill':>8} {'tok/s':>8} {'bound':>6} {'comp':>5} "
                     f"{'peak':>6}  rows per turn")
        for s in r["steps"]:
            share = f"{100 * s['share_of_bound']:.1f}%" if "share_of_bound" in s else "-"
            lines.append(f"{s['step']:>4} {s['step_s']:>7.2f} {s['rollout_s']:>8.2f} "
                         f"{s['learner_s']:>8.2f} {s['weight_sync_s']:>7.3f} "
                         f"{s['sampled_tokens']:>8} {s['prefill_tokens']:>8} "
                         f"{s['sampled_tokens_per_s'] or 0:>8.0f} {share:>6} "
                         f"{s['compilations']:>5} {s['peak_gib'] or 0:>6.2f}  {s['turn_rows']}")
        lines.append(f"steady (median of steps 2+): {json.dumps(r['steady'])}")
        if r.get("planner"):
            p = r["planner"]
            ratio = r["steady"].get("step_s", 0) / p["step_s"] if p["step_s"] else 0
            lines.append(f"planner ({p['row']} row): step {p['step_s']} s (rollouts "
                         f"{p['rollout_s']}, learner {p['learner_s']}); measured / predicted "
                         f"{ratio:.2f}" + ("" if p["same_shape"] else
                                           " (not the planner's full-budget shape)"))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (smoke test)")
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "qwen2-5-1-5b-g5.yaml"))
    parser.add_argument("--variants", default="full", help="comma-separated: "
                        + ", ".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--call-tokens", type=int, default=96,
                        help="tokens of each tool-calling turn (the call included)")
    parser.add_argument("--result-tokens", type=int, default=200,
                        help="filler words of each tool result")
    parser.add_argument("--prompt-words", type=int, default=120,
                        help="filler words before each question")
    parser.add_argument("--cap-gib", type=float, help="cap GPU memory (an A10G: 22)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a trainer override for every variant")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per variant")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("STEP-RESULT " + json.dumps(run_child(json.loads(args.child)), default=str),
              flush=True)
        return 0
    sets = {}
    for s in args.set:
        key, _, value = s.partition("=")
        try:
            sets[key] = json.loads(value)
        except ValueError:
            sets[key] = value
    if args.tiny:
        args.call_tokens, args.result_tokens, args.prompt_words = 40, 16, 8
        args.steps = min(args.steps, 2)
    results = []
    for variant in [v for v in args.variants.split(",") if v]:
        spec = {"variant": variant, "recipe": args.recipe, "tiny": args.tiny,
                "steps": args.steps, "call_tokens": args.call_tokens,
                "result_tokens": args.result_tokens, "prompt_words": args.prompt_words,
                "cap_gib": args.cap_gib, "overrides": {**VARIANTS[variant], **sets}}
        env = dict(os.environ, STEP_SHAPE_MERGE_LORA="0" if variant == "lora-unmerged" else "1",
                   PYTHONPATH=os.pathsep.join([str(REPO)] + [
                       p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
        print(f"== {variant}", flush=True)
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                  env=env)
            line = next((ln for ln in done.stdout.splitlines()
                         if ln.startswith("STEP-RESULT ")), None)
            if line is None:
                tail = (done.stderr or done.stdout).strip().splitlines()[-8:]
                results.append({"variant": variant,
                                "error": f"exit {done.returncode}: " + " | ".join(tail)})
            else:
                results.append(json.loads(line[len("STEP-RESULT "):]))
        except subprocess.TimeoutExpired:
            results.append({"variant": variant, "error": f"timed out after {args.timeout:g} s"})
        print(report(results[-1:]), flush=True)
    machine = {"python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}
    for name in ("torch", "transformers", "trl", "peft"):
        try:
            machine[name] = __import__(name).__version__
        except ImportError:
            machine[name] = None
    print(json.dumps(machine))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "results": results},
                                              indent=2, default=str) + "\n")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
