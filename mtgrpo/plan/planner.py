"""``plan_recipe``: everything the planner knows about one recipe, as data.

Placement (the launcher's), the batch shape (the trainer's own rule), the learner's and the
vLLM server's memory against the catalogue's GPU, and the cost. For a tuning recipe, every
trial the ranges allow is checked (the worst one is shown): a trial that cannot run or fit
fails the tuning job as surely as a plain job.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mtgrpo.contract import TrainerConfig
from mtgrpo.errors import UserError
from mtgrpo.plan import memory
from mtgrpo.plan.cost import Cost, PriceTable, cost_of, load_prices
from mtgrpo.plan.instances import GIB, Instance, catalogue, instance
from mtgrpo.plan.placement import Placement, placement
from mtgrpo.plan.shapes import ModelShape, resolve_shape

HEADROOM = 0.10  # "fits" = the estimate leaves at least this share of the GPU free
MAX_TRIALS = 256  # tuning: trial configs checked at most (range ends beyond that)


@dataclass(frozen=True)
class ConfigPlan:
    """One trainer config (the recipe's, or one tuning trial's) on the recipe's instances."""

    config: TrainerConfig
    placement: Placement
    batch_error: str
    learner: memory.LearnerMemory | None
    vllm: memory.VLLMMemory | None
    learner_capacity: int  # bytes of the training GPU the learner may use
    placement_gpu_bytes: int = 0  # one GPU's memory

    @property
    def headroom(self) -> float | None:
        if self.learner is None or not self.learner_capacity:
            return None
        return 1 - self.learner.required / self.learner_capacity

    @property
    def fits(self) -> bool:
        learner_ok = self.headroom is not None and self.headroom >= HEADROOM
        return learner_ok and (self.vllm is None or self.vllm.fits)


@dataclass(frozen=True)
class RecipePlan:
    name: str
    source: str
    instance_type: str
    instance: Instance | None
    instance_count: int
    region: str
    shape: ModelShape | None
    model: str
    main: ConfigPlan | None  # the recipe's own config (tuning: the worst trial)
    trials_checked: int
    cost: Cost
    prices: PriceTable
    skip_fit_check: str | None
    host_memory_need: int = 0
    tuned: tuple[str, ...] = field(default_factory=tuple)


def plan_recipe(recipe, *, model_dir: Path | None = None,
                prices: PriceTable | None = None, root: Path | None = None) -> RecipePlan:
    """Plan a loaded recipe (:class:`mtgrpo.recipes.Recipe`) on the hardware its backend names
    (:meth:`mtgrpo.backends.Backend.hardware`)."""
    from mtgrpo import backends

    job = recipe.job
    prices = prices or load_prices()
    hardware = backends.of(recipe).hardware(recipe)
    inst = node_instance(hardware)
    config = recipe.trainer
    channel = (job.get("inputs") or {}).get("model") or {}
    shape = resolve_shape(config.model_name_or_path, root=root, model_dir=model_dir,
                          channel_uri=channel.get("s3_data") if isinstance(channel, Mapping)
                          else None)
    skip = job.get("skip_fit_check")
    main = None
    trials = 0
    tuned: tuple[str, ...] = ()
    if inst is not None:
        configs = trial_configs(config, recipe.tuning)
        tuned = tuple(sorted((recipe.tuning or {}).get("hyperparameter_ranges") or {}))
        plans = [plan_config(c, inst, hardware.nodes, shape, first_host=hardware.first_host)
                 for c in configs]
        trials = len(plans)
        main = worst(plans)
    host_need = 0
    if main is not None and shape is not None:
        per_host = max(main.placement.processes_per_host or (1,))
        host_need = per_host * shape.params * (2 if config.bf16 else 4)
    shown = hardware.instance_type or hardware.gpu_model or hardware.unknown
    return RecipePlan(name=recipe.name, source=recipe.source,
                      instance_type=shown, instance=inst,
                      instance_count=hardware.nodes, region=hardware.region,
                      shape=shape, model=config.model_name_or_path, main=main,
                      trials_checked=trials,
                      cost=cost_of(hardware, int(job["max_run"]), recipe.tuning, prices),
                      prices=prices, skip_fit_check=skip, host_memory_need=host_need,
                      tuned=tuned)


def node_instance(hardware) -> Instance | None:
    """The catalogue row of a node: by instance type, else the first row whose GPU model the
    GPU product label names (``NVIDIA-A100-SXM4-80GB``: the row of ``A100-80GB``), with the
    node's own GPU count."""
    import dataclasses

    inst = instance(hardware.instance_type) if hardware.instance_type else None
    if inst is None and hardware.gpu_model:
        product = set(hardware.gpu_model.upper().replace(" ", "-").split("-"))
        inst = next((i for i in catalogue().values()
                     if set(i.gpu.upper().split("-")) <= product), None)
    if inst is not None and hardware.gpus_per_node is not None \
            and hardware.gpus_per_node != inst.gpus:
        inst = dataclasses.replace(inst, gpus=hardware.gpus_per_node)
    return inst


def plan_config(config: TrainerConfig, inst: Instance, instance_count: int,
                shape: ModelShape | None, *, first_host: str = "") -> ConfigPlan:
    """Placement, batch shape and memory of one trainer config."""
    from mtgrpo.trainer.train import check_batch_shape  # the trainer's own rule (no torch)

    where = placement(config, instance_count=instance_count, gpus_per_host=inst.gpus,
                      gpu_memory_bytes=inst.gpu_memory_bytes, first_host=first_host)
    batch_error = ""
    if not where.error:
        try:
            check_batch_shape(config, where.world_size)
        except UserError as err:
            batch_error = err.problems[0].message
    backend = config.generation_backend
    shared = backend == "vllm_shared"
    capacity = inst.gpu_memory_bytes
    learner = vllm = None
    utilization = where.vllm_utilization or config.vllm_gpu_memory_utilization
    if shape is not None and not where.error:
        if shared:
            capacity = int(capacity * (1 - utilization))
        learner = memory.learner_memory(shape, config, world_size=where.world_size,
                                        gpu_bytes=inst.gpu_memory_bytes,
                                        rollouts_on_gpu=backend == "transformers")
        if backend in ("vllm", "vllm_shared") and (where.vllm_gpus or shared):
            episodes = (config.per_device_train_batch_size * config.gradient_accumulation_steps
                        * where.world_size)
            vllm = memory.vllm_memory(shape, config, utilization=utilization,
                                      gpu_bytes=inst.gpu_memory_bytes,
                                      gpu_name=inst.gpu, tensor_parallel=max(
                                          len(where.vllm_gpus), 1),
                                      concurrent_sequences=episodes)
    return ConfigPlan(config=config, placement=where, batch_error=batch_error, learner=learner,
                      vllm=vllm, learner_capacity=capacity,
                      placement_gpu_bytes=inst.gpu_memory_bytes)


def worst(plans: list[ConfigPlan]) -> ConfigPlan:
    """The plan to show: one that cannot run, else the least headroom."""
    def badness(p: ConfigPlan) -> tuple:
        return (bool(p.placement.error), bool(p.batch_error),
                p.vllm is not None and not p.vllm.fits,
                -(p.headroom if p.headroom is not None else 1.0))
    return max(plans, key=badness)


def trial_configs(config: TrainerConfig, tuning: Mapping[str, Any] | None
                  ) -> list[TrainerConfig]:
    """The recipe's config, or every tuning trial's (integer ranges: each value, up to 16;
    continuous: both ends; categorical: each value), at most MAX_TRIALS combinations."""
    ranges = (tuning or {}).get("hyperparameter_ranges") or {}
    if not ranges:
        return [config]
    choices: list[list[tuple[str, Any]]] = []
    for name, spec in sorted(ranges.items()):
        kind = spec.get("type")
        if kind == "categorical":
            values = list(spec.get("values") or [])
        elif kind == "integer":
            lo, hi = int(spec["min_value"]), int(spec["max_value"])
            values = list(range(lo, hi + 1)) if hi - lo < 16 else [lo, hi]
        else:
            values = [float(spec["min_value"]), float(spec["max_value"])]
        choices.append([(name, v) for v in values])
    out = []
    for combo in itertools.islice(itertools.product(*choices), MAX_TRIALS):
        try:
            out.append(config.replace(**_typed(config, dict(combo))))
        except (UserError, TypeError, ValueError):
            continue  # a trial TrainerConfig refuses is reported by validation already
    return out or [config]


def _typed(config: TrainerConfig, values: dict[str, Any]) -> dict[str, Any]:
    from mtgrpo.contract.config import format_value, parse_value

    return {k: parse_value(k, v if isinstance(v, str) else format_value(v))
            for k, v in values.items()}


def gib(value: int | float) -> str:
    return f"{value / GIB:.1f} GiB"
