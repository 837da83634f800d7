"""``check_plan(recipe) -> list[Problem]``: render and validate refuse a recipe that cannot run
or cannot fit, with the cheapest fixes that do fit.

Cannot run (never skipped: the job would fail after SageMaker started its instances): the
launcher refuses the placement, or the world size it gives does not hold whole prompt groups.
Cannot fit (skipped with ``job.skip_fit_check: <reason>``): the learner's estimate leaves less
than 10% of its GPU free, or vLLM's KV cache cannot hold one ``max_model_len`` sequence; and a
recipe the planner cannot check (an instance type outside the catalogue, an unknown model).
"""

from __future__ import annotations

from pathlib import Path

from mtgrpo.errors import Problem, UserError
from mtgrpo.plan.instances import GIB, catalogue
from mtgrpo.plan.planner import (HEADROOM, ConfigPlan, RecipePlan, gib, plan_config,
                                  plan_recipe)
from mtgrpo.plan.shapes import KNOWN_SHAPES

SKIP = "or job.skip_fit_check: <reason>"


def check_plan(recipe, *, model_dir: Path | None = None, root: Path | None = None
               ) -> list[Problem]:
    """Every reason this recipe cannot run or fit, one Problem each."""
    return problems_of(plan_recipe(recipe, model_dir=model_dir, root=root), recipe)


def problems_of(plan: RecipePlan, recipe) -> list[Problem]:
    where = recipe.where
    skip = bool(plan.skip_fit_check)
    problems: list[Problem] = []
    if plan.instance is None:
        if not skip:
            problems.append(Problem(where("job.instance_type"), "job.instance_type",
                                    f"{plan.instance_type!r} is not in the fit planner's "
                                    "catalogue, so the recipe cannot be checked",
                                    "a type listed in mtgrpo/plan/instances.json (add a row), "
                                    + SKIP))
        return problems
    main = plan.main
    assert main is not None
    trial = " (a tuning trial)" if plan.tuned else ""
    if main.placement.error:
        key = f"trainer.{main.placement.error_key or 'generation_backend'}"
        problems.append(Problem(where(key), key,
                                f"{plan.instance_type}: {main.placement.error}",
                                main.placement.error_allowed or "a placement the launcher "
                                "accepts"))
        return problems
    if main.batch_error:
        per_host = main.placement.processes_per_host
        problems.append(Problem(
            where("trainer.num_generations"), "trainer.num_generations",
            f"{main.batch_error}{trial}; the launcher starts {' + '.join(map(str, per_host))} "
            f"training processes on {plan.instance_count} x {plan.instance_type} "
            f"({main.placement.gpus_per_host} GPUs each, vLLM on "
            f"{len(main.placement.vllm_gpus)} of the first host's; accelerate runs the same "
            "count on every host)",
            "a num_generations dividing that batch, or per_device_train_batch_size x "
            "gradient_accumulation_steps that it divides"))
    if skip:
        return problems
    if plan.shape is None:
        problems.append(Problem(where("trainer.model_name_or_path"), "trainer.model_name_or_path",
                                f"the fit planner does not know the shape of {plan.model!r}",
                                "a local model directory with config.json (mtgrpo plan "
                                "--model-dir), a model in the planner's table ("
                                + ", ".join(sorted(KNOWN_SHAPES)) + "), " + SKIP))
        return problems
    inst = plan.instance
    learner = main.learner
    if learner is not None and (main.headroom or 0) < HEADROOM:
        fixes = cheapest_fixes(plan, main)
        problems.append(Problem(
            where("job.instance_type"), "job.instance_type",
            f"recipe {plan.name} does not fit{trial} on one {inst.gpu} of {inst.name} "
            f"({gib(main.learner_capacity)}): the learner needs an estimated "
            f"{gib(learner.required)} at its {learner.peak_phase.name} peak "
            f"({_top_terms(learner)}), leaving less than {HEADROOM:.0%} free",
            ("fixes that fit: " + "; ".join(fixes) + "; " + SKIP) if fixes else
            "no single change fits: combine them (LoRA, a smaller micro-batch), or take a "
            "multi-GPU instance with deepspeed_stage 3, " + SKIP))
    if main.vllm is not None and not main.vllm.fits:
        v = main.vllm
        problems.append(Problem(
            where("trainer.vllm_gpu_memory_utilization"), "trainer.vllm_gpu_memory_utilization",
            f"recipe {plan.name}: vLLM's KV cache on one {inst.gpu} holds an estimated "
            f"{v.kv_tokens:,} tokens, less than one {v.max_model_len:,}-token sequence "
            f"(budget {gib(v.budget)}, weights {gib(v.weights)})",
            "a higher vllm_gpu_memory_utilization, vllm_gpus with more GPUs, or a larger GPU, "
            + SKIP))
    if plan.host_memory_need > inst.host_memory_gib * GIB:
        problems.append(Problem(
            where("job.instance_type"), "job.instance_type",
            f"recipe {plan.name}: loading the model in {max(main.placement.processes_per_host)} "
            f"processes needs about {gib(plan.host_memory_need)} of host memory, "
            f"{inst.name} has {inst.host_memory_gib} GiB", "a type with more memory, " + SKIP))
    return problems


def _top_terms(learner) -> str:
    terms = sorted(learner.peak_phase.terms, key=lambda t: -t.bytes)[:3]
    return ", ".join(f"{t.name} {gib(t.bytes)}" for t in terms)


def cheapest_fixes(plan: RecipePlan, main: ConfigPlan) -> list[str]:
    """Single changes that make the recipe fit, cheapest first: smaller micro-batches,
    checkpointing, bf16 Kahan master weights, LoRA, a higher ZeRO stage, then larger types."""
    config = main.config
    inst = plan.instance
    assert inst is not None  # a learner estimate needs the instance's GPUs
    candidates: list[tuple[str, dict]] = []
    b, ga = config.per_device_train_batch_size, config.gradient_accumulation_steps
    smaller = b // 2
    while smaller >= 1:
        if b % smaller == 0:
            candidates.append((f"per_device_train_batch_size {smaller} with "
                               f"gradient_accumulation_steps {ga * b // smaller}",
                               {"per_device_train_batch_size": smaller,
                                "gradient_accumulation_steps": ga * b // smaller}))
        smaller //= 2
    if not config.gradient_checkpointing:
        candidates.append(("gradient_checkpointing true", {"gradient_checkpointing": True}))
    if main.learner is not None and main.learner.precision == "fp32" and not main.learner.lora:
        candidates.append(("master_weights bf16_kahan", {"master_weights": "bf16_kahan"}))
    if not getattr(config, "lora_r", 0) and not config.deepspeed_stage:
        candidates.append(("lora_r 16", {"lora_r": 16}))
    if main.placement.world_size > 1 and config.deepspeed_stage in (0, 2):
        candidates.append(("deepspeed_stage 3", {"deepspeed_stage": 3}))
    fixes: list[str] = []
    for text, change in candidates:
        try:
            changed = config.replace(**change)
        except (TypeError, ValueError, UserError):  # a key this checkout lacks, or refused
            continue
        trial = plan_config(changed, inst, plan.instance_count, plan.shape)
        if trial.learner and trial.fits and not trial.batch_error and not trial.placement.error:
            fixes.append(f"{text} ({gib(trial.learner.required)})")
            if len(fixes) >= 3:
                break
    fixes += _larger_instances(plan, main)
    return fixes


# Step time with activation checkpointing of every layer over the time without it: measured at
# the Qwen3-1.7B shape, 16 episodes, on an H200 (369.7 / 297.5 ms, benchmarks/RESULTS.md).
CHECKPOINTING_COST = 1.24


def faster_fits(plan: RecipePlan, main: ConfigPlan) -> list[str]:
    """Changes that spend memory the recipe leaves free to buy step time and still fit: today,
    activation checkpointing off (the forward is then not recomputed in backward)."""
    config = main.config
    if (main.learner is None or main.batch_error or not config.gradient_checkpointing
            or plan.instance is None):
        return []
    trial = plan_config(config.replace(gradient_checkpointing=False), plan.instance,
                        plan.instance_count, plan.shape)
    if not (trial.learner and trial.fits and not trial.batch_error
            and not trial.placement.error):
        return []
    return [f"gradient_checkpointing false also fits ({gib(trial.learner.required)} of "
            f"{gib(trial.learner_capacity)}): no recomputed forward, "
            f"{CHECKPOINTING_COST:.2f}x less step time measured at the Qwen3-1.7B shape on an "
            "H200 (docs/performance.md)"]


def _larger_instances(plan: RecipePlan, main: ConfigPlan) -> list[str]:
    inst = plan.instance
    assert inst is not None  # called after a learner estimate, which needs the instance
    found: list[tuple[float, str]] = []
    for other in catalogue().values():
        if other.gpus != inst.gpus or other.gpu_memory_mib <= inst.gpu_memory_mib:
            continue
        trial = plan_config(main.config, other, plan.instance_count, plan.shape)
        if trial.fits and not trial.batch_error and not trial.placement.error:
            price = plan.prices.price(plan.region, other.name)
            found.append((price if price is not None else float("inf"),
                          f"instance_type {other.name} ({other.gpu}, "
                          f"{gib(other.gpu_memory_bytes)}"
                          + (f", ${price:.2f}/h)" if price is not None else ")")))
    found.sort(key=lambda item: (item[0], item[1]))
    return [text for _, text in found[:2]]


__all__ = ["check_plan", "problems_of", "cheapest_fixes"]
