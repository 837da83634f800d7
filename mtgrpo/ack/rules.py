"""Rules between a recipe's values that only ACK SageMaker has (the shared ``job:`` rules are
:func:`mtgrpo.validate.check_recipe`'s)."""

from __future__ import annotations

from mtgrpo.errors import Problem
from mtgrpo.recipes import Recipe, relocate


def check_ack_recipe(recipe: Recipe) -> list[Problem]:
    problems = []
    env = recipe.job.get("environment")
    if recipe.tuning is not None and isinstance(env, dict) and env:
        # The ACK controller drops Environment from a tuning job's trial definition.
        problems.append(Problem(recipe.source, "job.environment", "tuning trials never see "
                                "environment variables (the ACK controller drops them)",
                                "trainer hyperparameters, which reach every trial"))
    return relocate([p for p in problems if not recipe.invalid(p.key)], recipe)
