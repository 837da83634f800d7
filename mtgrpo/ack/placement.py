"""Where an ACK SageMaker recipe's processes go: the instance type's GPUs from the planner's
catalogue, split by the one placement rule."""

from __future__ import annotations

from mtgrpo.errors import Problem
from mtgrpo.recipes import Recipe


def recipe_placement(recipe: Recipe):
    from mtgrpo.plan.instances import instance
    from mtgrpo.plan.placement import placement

    job = recipe.job
    inst = instance(job["instance_type"])
    if inst is None:
        return None, [Problem(recipe.where("job.instance_type"), "job.instance_type",
                              f"{job['instance_type']} is not in the planner's catalogue",
                              "a row of mtgrpo/plan/instances.json")]
    where = placement(recipe.trainer, instance_count=int(job["instance_count"]),
                      gpus_per_host=inst.gpus, gpu_memory_bytes=inst.gpu_memory_bytes)
    if where.error:
        key = f"trainer.{where.error_key or 'generation_backend'}"
        return None, [Problem(recipe.where(key), key, where.error, where.error_allowed)]
    return where, []
