"""Fit benchmark: the planner's estimate beside the measured peak of the real training loop.

For every single-GPU configuration it can run (the shipped recipes whose instance has one GPU,
the extreme trials of a tuning recipe, and variants given with ``--set``), one child process
runs ``mtgrpo.trainer.train.run`` (TRL's trainer, the transformers sampler on the training GPU,
the wiki_search tool over a small corpus) with the recipe's hyperparameters, on a model of the
real shape with random weights and a tokenizer built locally, under a memory cap equal to the
target GPU (``torch.cuda.set_per_process_memory_fraction``: the GPU's memory less the CUDA
context the planner allows for). It prints ``torch.cuda.max_memory_allocated`` (overall and
during rollouts) beside the planner's peak, and whether the estimate meets the goal: within
10% of the measured peak and never more than 5% below it.

The planner's peak is a worst case: every rollout call of 16 rows holding the longest prompt
of a last turn (max_prompt_length + max_completion_length - max_tokens_per_turn tokens) and
sampling a whole turn, every micro-batch at its longest. A random model never calls the tool,
so the benchmark reaches that case with one turn: it runs the config with
``max_prompt_length`` = that longest prompt, ``max_completion_length`` = ``max_tokens_per_turn``
and questions padded past the prompt length (the same rollout call and the same micro-batch
tokens as the recipe's worst case; the planner's estimate of both configs is printed). A config
the planner says does not fit runs without the cap, to measure its real peak.

    python benchmarks/fit.py --tiny                       # CPU smoke test (no memory numbers)
    python benchmarks/fit.py --json fit.json              # one CUDA GPU, every configuration
    python benchmarks/fit.py --set master_weights=bf16_kahan --json fit.json

Without ``--set`` each recipe runs as it is, without gradient checkpointing, and with
``master_weights`` bf16_kahan / fp32 and ``lora_r: 16`` where this checkout has those keys.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FILLER = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
          "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee "
          "zulu").split()
TINY_SHAPE = dict(hidden=128, layers=2, heads=2, kv_heads=1, head_dim=64, intermediate=256,
                  tied_embeddings=True, attention_bias=True)


# -- which configurations -----------------------------------------------------------------------

def default_variants() -> list[dict]:
    """The recipe as it is, without checkpointing (checks the full activation arithmetic), and
    the other issues' options where this checkout has their keys."""
    from mtgrpo.contract.config import field_specs

    fields = field_specs()
    variants = [{}, {"gradient_checkpointing": False}]
    if "master_weights" in fields:
        variants += [{"master_weights": "bf16_kahan"}, {"master_weights": "fp32"}]
    if "lora_r" in fields:
        variants += [{"lora_r": 16}]
    return variants


def configurations(recipes: list[Path], sets: list[dict]) -> list[dict]:
    """(label, recipe, trainer overrides) of every single-GPU configuration to run."""
    from mtgrpo.plan.instances import instance
    from mtgrpo.plan.planner import trial_configs
    from mtgrpo.recipes import discover_recipes, load_recipe

    sets = sets or default_variants()
    out = []
    for path in recipes or discover_recipes(REPO / "recipes"):
        recipe = load_recipe(path, root=REPO)
        if recipe.backend != "sagemaker":  # no ml.* instance to cap the GPU to
            continue
        inst = instance(recipe.job["instance_type"])
        if inst is None or inst.gpus != 1 or recipe.job["instance_count"] != 1:
            continue
        trials = [{}]
        ranges = (recipe.tuning or {}).get("hyperparameter_ranges") or {}
        if ranges:  # the largest value of each range that can change memory
            base = recipe.trainer
            worst = {}
            for config in trial_configs(base, recipe.tuning):
                for key in ranges:
                    value = getattr(config, key)
                    if isinstance(value, (int, float)) and not isinstance(value, bool) \
                            and value > worst.get(key, value - 1):
                        worst[key] = value
            trials = [{k: v for k, v in worst.items() if k != "learning_rate"}]
        for trial in trials:
            for extra in sets:
                overrides = {**trial, **extra}
                label = recipe.name + "".join(f" {k}={v}" for k, v in sorted(overrides.items()))
                out.append({"label": label, "recipe": str(path), "overrides": overrides})
    return out


def parse_set(text: str) -> dict:
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value.strip()
    return out


# -- one configuration (child process) ----------------------------------------------------------

def measurement_config(config):
    """The config the benchmark runs: the recipe's worst rollout call and micro-batch in one
    turn (see the module docstring)."""
    turn = config.max_tokens_per_turn
    longest_prompt = config.max_prompt_length + config.max_completion_length - turn
    return config.replace(max_prompt_length=longest_prompt, max_completion_length=turn,
                          generation_backend="transformers")


def build_model(shape, directory: Path, device: str, *, tokenizer) -> None:
    import torch
    import transformers

    cls = transformers.Qwen3Config if shape.qk_norm else transformers.Qwen2Config
    config = cls(hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                 num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
                 head_dim=shape.head_dim, intermediate_size=shape.intermediate,
                 vocab_size=shape.vocab, tie_word_embeddings=shape.tied_embeddings,
                 max_position_embeddings=shape.max_position)
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


def write_data(directory: Path, prompt_tokens: int) -> None:
    """The synthetic code-lookup task, questions padded with single-token words past
    ``prompt_tokens`` so every prompt is cut to exactly max_prompt_length."""
    from mtgrpo.testing.synthetic import write_task

    write_task(directory, seed=0, n_eval=6)
    pad = " ".join(FILLER[i % len(FILLER)] for i in range(prompt_tokens + 64))
    for name in ("train.jsonl", "eval.jsonl"):
        path = directory / name
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for row in rows:
            row["question"] = pad + " " + row["question"]
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def run_one(spec: dict, *, tiny: bool, steps: int, cap: bool) -> dict:
    import torch

    from mtgrpo.plan.instances import instance
    from mtgrpo.plan.memory import CUDA_CONTEXT_BYTES
    from mtgrpo.plan.planner import plan_config
    from mtgrpo.plan.shapes import ModelShape, resolve_shape
    from mtgrpo.recipes import load_recipe
    from mtgrpo.testing.tiny import build_tokenizer
    from mtgrpo.trainer.paths import RunPaths
    from mtgrpo.trainer.train import run

    recipe = load_recipe(Path(spec["recipe"]), root=REPO)
    inst = instance(recipe.job["instance_type"])
    known = {k: v for k, v in spec["overrides"].items() if hasattr(recipe.trainer, k)}
    missing = sorted(set(spec["overrides"]) - set(known))
    if missing:
        return {**spec, "skipped": f"trainer keys not in this checkout: {', '.join(missing)}"}
    config = recipe.trainer.replace(**known)
    tokenizer = build_tokenizer(" ".join(FILLER))
    device = "cuda" if torch.cuda.is_available() and not tiny else "cpu"
    if tiny:
        shape = ModelShape(name="tiny", vocab=len(tokenizer), **TINY_SHAPE)
        config = config.replace(per_device_train_batch_size=2, gradient_accumulation_steps=2,
                                num_generations=4, max_prompt_length=96,
                                max_completion_length=48, max_tokens_per_turn=24,
                                bf16=False, gradient_checkpointing=False)
    else:
        shape = resolve_shape(config.model_name_or_path)
    if getattr(config, "master_weights", None) == "auto" and not tiny:
        # The trainer resolves auto by the GPU it sees (an H200 here): pin what the target
        # GPU resolves to, so the run keeps the optimizer state the recipe would there.
        from mtgrpo.plan.memory import adapter_params, resolve_master_weights

        trainable = 0 if adapter_params(config, shape) else shape.params
        config = config.replace(master_weights=resolve_master_weights(
            config, zero_stage=0, trainable_bf16=trainable, gpu_bytes=inst.gpu_memory_bytes))
    bench = measurement_config(config).replace(
        max_steps=steps, eval_steps=0, save_steps=10 ** 6, logging_steps=1, seed=0)
    planned = plan_config(_as_run(config, device), inst, 1, shape)
    planned_bench = plan_config(_as_run(bench, device), inst, 1, shape)
    estimate = planned_bench.learner
    result = {**spec, "device": device, "shape": shape.name, "instance": inst.name,
              "gpu": inst.gpu, "estimate_peak_bytes": estimate.peak,
              "estimate_phase": estimate.peak_phase.name,
              "estimate_phases": {p.name: p.bytes for p in estimate.phases},
              "estimate_learner_bytes": max(p.bytes for p in estimate.phases
                                            if p.name != "rollout"),
              "estimate_required_bytes": estimate.required,
              "recipe_estimate_peak_bytes": planned.learner.peak,
              "planner_fits": planned_bench.fits, "precision": estimate.precision,
              "liger": getattr(_as_run(bench, device), "liger_kernels", "absent"),
              "rollout_rule": estimate.rollout_rule,
              "measured_config": {k: getattr(bench, k) for k in (
                  "per_device_train_batch_size", "gradient_accumulation_steps",
                  "num_generations", "max_prompt_length", "max_completion_length",
                  "max_tokens_per_turn", "gradient_checkpointing", "bf16")}}
    capped = None
    if device == "cuda":
        total = torch.cuda.get_device_properties(0).total_memory
        capped = inst.gpu_memory_bytes - CUDA_CONTEXT_BYTES
        if cap and planned_bench.fits and capped < total:
            torch.cuda.set_per_process_memory_fraction(capped / total)
        else:
            capped = None
        result["card"] = torch.cuda.get_device_name(0)
    result["cap_bytes"] = capped
    peaks = {"rollout": 0}
    _watch_rollouts(peaks, device)
    with tempfile.TemporaryDirectory(prefix="mtgrpo-fit-") as tmp:
        root = Path(tmp)
        build_model(shape, root / "model", device, tokenizer=tokenizer)
        write_data(root / "data", bench.max_prompt_length)
        paths = RunPaths(model=str(root / "model"), train_file=root / "data" / "train.jsonl",
                         eval_file=root / "data" / "eval.jsonl",
                         corpus_dir=root / "data" / "corpus", output_dir=root / "out",
                         model_dir=root / "out" / "model", checkpoint_dir=root / "ckpt")
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        try:
            summary = run(bench, paths, resume=False)
            result["global_step"] = summary["global_step"]
            result["oom"] = False
        except torch.OutOfMemoryError as err:
            result["oom"] = True
            result["oom_message"] = str(err).splitlines()[0][:300]
        result["seconds"] = round(time.perf_counter() - started, 1)
    if device == "cuda":
        measured = max(torch.cuda.max_memory_allocated(), peaks["overall"]
                       if "overall" in peaks else 0)
        result["measured_peak_bytes"] = measured
        result["measured_rollout_peak_bytes"] = peaks["rollout"]
        # outside sampler calls (learner steps, model load and save); the last stretch since
        # the final rollout is still in the allocator's own peak
        result["measured_learner_peak_bytes"] = max(peaks.get("learner", 0),
                                                    torch.cuda.max_memory_allocated())
        result["measured_reserved_bytes"] = torch.cuda.max_memory_reserved()
        ratio = estimate.peak / measured if measured else None
        result["estimate_over_measured"] = round(ratio, 4) if ratio else None
        result["meets_goal"] = bool(ratio and 0.95 <= ratio <= 1.10)
    return result


def _as_run(config, device: str):
    """The config as the planner must see it for this run: ``liger_kernels: auto`` resolved
    the way the trainer resolves it (on with CUDA and liger-kernel installed)."""
    import importlib.util

    if getattr(config, "liger_kernels", None) == "auto":
        on = device == "cuda" and importlib.util.find_spec("liger_kernel") is not None
        return config.replace(liger_kernels="on" if on else "off")
    return config


def _watch_rollouts(peaks: dict, device: str) -> None:
    """Record the peak allocated during sampler calls apart from the rest of the step."""
    if device != "cuda":
        return
    import torch

    from mtgrpo.rollout import sampler

    original = sampler.TransformersSampler.generate_sync

    def watched(self, *args, **kwargs):
        peaks["learner"] = max(peaks.get("learner", 0), torch.cuda.max_memory_allocated())
        peaks["overall"] = max(peaks.get("overall", 0), peaks["learner"])
        torch.cuda.reset_peak_memory_stats()
        try:
            return original(self, *args, **kwargs)
        finally:
            peaks["rollout"] = max(peaks["rollout"], torch.cuda.max_memory_allocated())
            peaks["overall"] = max(peaks["overall"], peaks["rollout"])
            torch.cuda.reset_peak_memory_stats()

    sampler.TransformersSampler.generate_sync = watched


# -- the parent ---------------------------------------------------------------------------------

def _gib(value) -> str:
    return "-" if value in (None, 0) else f"{value / 2**30:.2f}"


def report(results: list[dict]) -> str:
    lines = [f"{'configuration (GiB)':<52} {'estimate':>9} {'measured':>9} "
             f"{'rollout est/meas':>17} {'learner est/meas':>17} {'reserved':>9} "
             f"{'est/meas':>8}  goal  notes"]
    for r in results:
        if "skipped" in r or "error" in r:
            lines.append(f"{r['label']:<52} {r.get('skipped') or r.get('error')}")
            continue
        note = f"{r['estimate_phase']} peak; {r['precision']}"
        if r.get("oom"):
            note += "; OUT OF MEMORY under the cap"
        if r.get("cap_bytes") is None and r.get("device") == "cuda":
            note += "; no cap (planner: does not fit)"
        ratio = r.get("estimate_over_measured")
        goal = "-" if ratio is None else ("ok" if r.get("meets_goal") else "MISS")
        rollout = (f"{_gib(r['estimate_phases'].get('rollout'))}/"
                   f"{_gib(r.get('measured_rollout_peak_bytes'))}")
        learner = (f"{_gib(r['estimate_learner_bytes'])}/"
                   f"{_gib(r.get('measured_learner_peak_bytes'))}")
        lines.append(f"{r['label']:<52} {_gib(r['estimate_peak_bytes']):>9} "
                     f"{_gib(r.get('measured_peak_bytes')):>9} {rollout:>17} {learner:>17} "
                     f"{_gib(r.get('measured_reserved_bytes')):>9} "
                     f"{'-' if ratio is None else f'{ratio:.3f}':>8}  {goal:<4}  {note}")
    return "\n".join(lines)


def environment() -> dict:
    info = {"python": platform.python_version(), "machine": platform.node(),
            "date": time.strftime("%Y-%m-%d", time.gmtime())}
    for name in ("torch", "transformers", "trl", "accelerate"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    try:
        import torch

        if torch.cuda.is_available():
            info["card"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="*", type=Path, help="recipes (default: recipes/*.yaml)")
    parser.add_argument("--tiny", action="store_true", help="tiny model on CPU (smoke test)")
    parser.add_argument("--steps", type=int, default=2,
                        help="optimizer steps per config (2: the second rollout holds the "
                             "optimizer state)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE[,...]",
                        help="a trainer variant to run for every recipe (repeatable)")
    parser.add_argument("--no-cap", action="store_true", help="never cap GPU memory")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per config")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = run_one(json.loads(args.child), tiny=args.tiny, steps=args.steps,
                         cap=not args.no_cap)
        print("FIT-RESULT " + json.dumps(result, sort_keys=True), flush=True)
        return 0
    specs = configurations(args.recipes, [parse_set(s) for s in args.set])
    if args.tiny:
        specs = specs[:1]
    results = []
    for spec in specs:
        cmd = [sys.executable, __file__, "--child", json.dumps(spec), "--steps", str(args.steps)]
        cmd += ["--tiny"] if args.tiny else []
        cmd += ["--no-cap"] if args.no_cap else []
        print(f"== {spec['label']}", flush=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                  env=env)
            line = next((ln for ln in done.stdout.splitlines()
                         if ln.startswith("FIT-RESULT ")), None)
            if line is None:
                tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
                results.append({**spec, "error": f"exit {done.returncode}: " + " | ".join(tail)})
            else:
                results.append(json.loads(line[len("FIT-RESULT "):]))
        except subprocess.TimeoutExpired:
            results.append({**spec, "error": f"timed out after {args.timeout:g} s"})
    print(report(results))
    env_info = environment()
    print(json.dumps(env_info, sort_keys=True))
    if args.json:
        Path(args.json).write_text(json.dumps({"environment": env_info, "results": results},
                                              indent=2, sort_keys=True) + "\n")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
