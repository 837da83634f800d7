"""``mtgrpo plan`` output: a table per recipe for people, JSON for scripts."""

from __future__ import annotations

from typing import Any

from mtgrpo.errors import Problem
from mtgrpo.plan.check import faster_fits
from mtgrpo.plan.instances import GIB
from mtgrpo.plan.planner import HEADROOM, RecipePlan


def _g(value: int | float) -> str:
    return f"{value / GIB:.1f}"


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.2f}"


def verdict(plan: RecipePlan, problems: list[Problem]) -> str:
    main = plan.main
    if plan.skip_fit_check:
        estimate = ""
        if main is not None and main.learner is not None:
            estimate = "; estimate: " + ("fits" if main.fits else "DOES NOT FIT")
        return f"fit check skipped ({plan.skip_fit_check}){estimate}"
    if problems or main is None:
        return "DOES NOT RUN OR FIT"
    if main.learner is None:
        return "not checked"
    return f"fits, {main.headroom:.0%} of the GPU free (needs >= {HEADROOM:.0%})"


def table(plan: RecipePlan, problems: list[Problem]) -> str:
    lines = [f"{plan.name}  ({plan.source})"]
    inst = plan.instance

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<16}{text}")

    if inst is None:
        row("instance", f"{plan.instance_count} x {plan.instance_type} (not in the catalogue)")
    else:
        row("instance", f"{plan.instance_count} x {inst.name}: {inst.gpus} x {inst.gpu} "
                        f"{_g(inst.gpu_memory_bytes)} GiB each, host {inst.host_memory_gib} GiB")
    main = plan.main
    if main is not None:
        where = main.placement
        backend = main.config.generation_backend
        if where.error:
            row("placement", f"refused by the launcher: {where.error}")
        else:
            vllm = (f"vLLM on GPU {','.join(map(str, where.vllm_gpus))} of the first host"
                    if where.vllm_gpus else {"transformers": "rollouts on the training GPU "
                                                             "(transformers)",
                                             "vllm_shared": "vLLM shares the training GPU"
                                             }.get(backend, "vLLM elsewhere"))
            idle = f", {where.idle_gpus} GPU(s) idle" if where.idle_gpus else ""
            word = "process" if where.world_size == 1 else "processes"
            row("placement", f"{' + '.join(map(str, where.processes_per_host))} training "
                             f"{word} = world size {where.world_size}; {vllm}{idle}")
        c = main.config
        batch = c.per_device_train_batch_size * c.gradient_accumulation_steps * max(
            where.world_size, 1)
        row("batch", f"{c.per_device_train_batch_size} x {c.gradient_accumulation_steps} x "
                     f"{where.world_size} = {batch} completions, {c.num_generations} per prompt"
            + (f"  <- {main.batch_error}" if main.batch_error else ""))
    if plan.shape is None:
        row("model", f"{plan.model}: shape unknown")
    else:
        s = plan.shape
        row("model", f"{plan.model}: {s.params / 1e9:.2f} B params (hidden {s.hidden}, "
                     f"{s.layers} layers, {s.heads}/{s.kv_heads} heads, vocab {s.vocab})")
    learner = main.learner if main is not None else None
    if learner is not None:
        c = main.config
        row("learner", f"{learner.trainable_params / 1e9:.3f} B trainable, optimizer keeps "
                       f"{learner.precision}"
            + (f", ZeRO-{learner.zero_stage} over {learner.world_size}"
               if learner.zero_stage else ""))
        names: list[str] = []
        for phase in learner.phases:
            for t in phase.terms:
                if t.name not in names:
                    names.append(t.name)
        header = "".join(f"{p.name:>10}" for p in learner.phases)
        lines.append(f"  {'GiB per GPU':<24}{header}")
        for name in names:
            cells = ""
            for phase in learner.phases:
                value = next((t.bytes for t in phase.terms if t.name == name), None)
                cells += f"{'-' if value is None else _g(value):>10}"
            lines.append(f"    {name:<22}{cells}")
        lines.append(f"    {'total':<22}" + "".join(f"{_g(p.bytes):>10}"
                                                    for p in learner.phases))
        row("peak", f"{_g(learner.peak)} GiB ({learner.peak_phase.name}); with allocator "
                    f"slack and CUDA context {_g(learner.required)} of "
                    f"{_g(main.learner_capacity)} GiB")
        row("activations", f"{_g(learner.activations_checkpointed)} GiB a micro-batch with "
                           f"gradient checkpointing, {_g(learner.activations_full)} GiB without"
                           f" (now {'on' if c.gradient_checkpointing else 'off'})")
        for hint in faster_fits(plan, main):
            row("faster", hint)
        if learner.rollout_rule.startswith(("generate", "mtgrpo")):
            row("rollout rule", learner.rollout_rule)
    if main is not None and main.vllm is not None:
        v = main.vllm
        share = v.budget / main.placement_gpu_bytes if main.placement_gpu_bytes else 0
        row("vLLM", f"{_g(v.budget)} GiB ({share:.2g} of the "
                    f"GPU): weights {_g(v.weights)}, profile {_g(v.activations)}, other "
                    f"{_g(v.overhead)}, KV cache {_g(v.kv_cache)} GiB")
        share = min(v.kv_tokens / v.concurrent_tokens, 1.0) if v.concurrent_tokens else 1.0
        row("", f"KV {v.kv_bytes_per_token:,} B/token: {v.kv_tokens:,} tokens "
                f"({v.num_gpu_blocks:,} blocks of 16); a step's batch needs up to "
                f"{v.concurrent_tokens:,} ({share:.0%} at once); max_model_len "
                f"{v.max_model_len:,} {'fits' if v.fits else 'DOES NOT FIT'}")
    cost = plan.cost
    price = cost.price_per_hour
    spot = " (managed spot)" if cost.spot else ""
    if price is None:
        row("cost", f"not priced: no price row for {plan.instance_type} in "
                    f"{plan.region or 'this region'} (a cluster's own nodes are not priced)")
    else:
        row("cost", f"{_money(price)}/h x {cost.instance_count} x {cost.hours:.1f} h (max_run) = "
                    f"{_money(cost.on_demand)} on demand, {_money(cost.spot_estimate)} spot "
                    f"estimate (-{cost.spot_savings:.0%}); this recipe{spot}: "
                    f"{_money(cost.per_job)} a job")
    if cost.trials > 1:
        row("tuning", f"{cost.trials} trials, {cost.parallel} at a time: up to "
                      f"{_money(cost.total)}, wall time up to {cost.wall_hours:.1f} h "
                      f"({plan.trials_checked} trial configs checked, worst shown)")
    row("verdict", verdict(plan, problems))
    for p in problems:
        lines.append(f"  ! {p.key}: {p.message}" + (f" ({p.allowed})" if p.allowed else ""))
    return "\n".join(lines)


def as_json(plan: RecipePlan, problems: list[Problem]) -> dict[str, Any]:
    main = plan.main
    inst = plan.instance
    out: dict[str, Any] = {
        "recipe": plan.name, "source": plan.source,
        "instance": None if inst is None else {
            "type": inst.name, "count": plan.instance_count, "gpus": inst.gpus, "gpu": inst.gpu,
            "gpu_memory_bytes": inst.gpu_memory_bytes,
            "host_memory_bytes": inst.host_memory_gib * GIB},
        "model": plan.model,
        "params": plan.shape.params if plan.shape else None,
        "fits": bool(main is not None and main.learner is not None and main.fits
                     and not main.batch_error and not main.placement.error),
        "refused": bool(problems),
        "skip_fit_check": plan.skip_fit_check,
        "problems": [{"file": p.file, "key": p.key, "message": p.message,
                      "allowed": p.allowed} for p in problems],
    }
    if main is not None:
        where = main.placement
        out["placement"] = {"processes_per_host": list(where.processes_per_host),
                            "world_size": where.world_size, "vllm_gpus": list(where.vllm_gpus),
                            "idle_gpus": where.idle_gpus, "error": where.error or None}
        learner = main.learner
        if learner is not None:
            out["learner"] = {
                "precision": learner.precision, "zero_stage": learner.zero_stage,
                "trainable_params": learner.trainable_params, "lora": learner.lora,
                "phases": {p.name: {"bytes": p.bytes, "terms": {t.name: t.bytes
                                                                 for t in p.terms}}
                           for p in learner.phases},
                "peak_bytes": learner.peak, "peak_phase": learner.peak_phase.name,
                "required_bytes": learner.required, "capacity_bytes": main.learner_capacity,
                "headroom": round(main.headroom, 4) if main.headroom is not None else None,
                "activations_checkpointed_bytes": learner.activations_checkpointed,
                "activations_full_bytes": learner.activations_full,
                "rollout_rule": learner.rollout_rule,
                "faster_fits": faster_fits(plan, main)}
        if main.vllm is not None:
            v = main.vllm
            out["vllm"] = {"budget_bytes": v.budget, "weights_bytes": v.weights,
                           "activations_bytes": v.activations, "overhead_bytes": v.overhead,
                           "kv_cache_bytes": v.kv_cache, "kv_bytes_per_token":
                               v.kv_bytes_per_token, "kv_tokens": v.kv_tokens,
                           "num_gpu_blocks": v.num_gpu_blocks, "max_model_len": v.max_model_len,
                           "concurrent_tokens": v.concurrent_tokens, "fits": v.fits}
    cost = plan.cost
    out["cost"] = {"currency": plan.prices.currency, "prices": plan.prices.source,
                   "region": plan.region, "price_per_hour": cost.price_per_hour,
                   "instance_count": cost.instance_count, "max_run_hours": cost.hours,
                   "on_demand": cost.on_demand, "spot_estimate": cost.spot_estimate,
                   "spot_savings_assumed": cost.spot_savings, "use_spot": cost.spot,
                   "per_job": cost.per_job, "trials": cost.trials,
                   "max_parallel_jobs": cost.parallel, "total": cost.total,
                   "wall_hours": cost.wall_hours}
    return out
