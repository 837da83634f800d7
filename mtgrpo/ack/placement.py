"""Where an ACK SageMaker recipe's processes go: the instance type's GPUs from the planner's
catalogue, split by the one placement rule (:func:`mtgrpo.contract.placement.place`)."""

from __future__ import annotations

from mtgrpo.ack.backend import FIRST_HOST
from mtgrpo.contract.placement import Placement, place
from mtgrpo.errors import Problem, UserError
from mtgrpo.recipes import Recipe


def recipe_placement(recipe: Recipe) -> tuple[Placement | None, list[Problem]]:
    from mtgrpo.plan.instances import instance

    job = recipe.job
    inst = instance(job["instance_type"])
    if inst is None:
        return None, [Problem(recipe.where("job.instance_type"), "job.instance_type",
                              f"{job['instance_type']} is not in the planner's catalogue",
                              "a row of mtgrpo/plan/instances.json")]
    try:
        return place(recipe.trainer, num_nodes=int(job["instance_count"]),
                     gpus_per_node=inst.gpus, master_host=FIRST_HOST,
                     source=recipe.where("trainer"), key_prefix="trainer."), []
    except UserError as err:
        return None, list(err.problems)
