"""Rules between a recipe's values that only ACK SageMaker has (the shared ``job:`` rules are
:func:`mtgrpo.validate.check_recipe`'s)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mtgrpo.errors import Problem, UserError
from mtgrpo.recipes import Recipe, relocate

if TYPE_CHECKING:
    from mtgrpo.render.settings import Settings

# job: keys whose value must be one of a service-model enum. Checked with the recipe's other
# values, so a recipe with several mistakes shows this one in the same run: the resource stage,
# which checks the whole request, runs only once the recipe passed the schema.
ENUM_KEYS = {"instance_type": "TrainingInstanceType"}


def check_ack_recipe(recipe: Recipe, settings: Settings | None = None) -> list[Problem]:
    """``settings``: the project's (default: read from the recipe's repository)."""
    if settings is None:
        from mtgrpo.recipes import find_root
        from mtgrpo.render.settings import load_settings

        try:
            settings = load_settings(find_root(recipe.path))
        except UserError:
            settings = None  # the settings' own problems are reported by render_all
    problems = []
    if settings is not None and settings.require_kms_key:
        for key in ("output_kms_key", "volume_kms_key"):
            if not recipe.job.get(key):
                problems.append(Problem(recipe.where(f"job.{key}"), f"job.{key}",
                                        "no KMS key (require_kms_key in recipes/_project.yaml)",
                                        "a KMS key ARN, id or alias of a customer-managed key"))
    problems += _enum_values(recipe)
    env = recipe.job.get("environment")
    if recipe.tuning is not None and isinstance(env, dict) and env:
        # The ACK controller drops Environment from a tuning job's trial definition.
        problems.append(Problem(recipe.source, "job.environment", "tuning trials never see "
                                "environment variables (the ACK controller drops them)",
                                "trainer hyperparameters, which reach every trial"))
    return relocate([p for p in problems if not recipe.invalid(p.key)], recipe)


def _enum_values(recipe: Recipe) -> list[Problem]:
    from mtgrpo.ack.shapes import node
    from mtgrpo.errors import did_you_mean

    problems = []
    for key, shape_name in ENUM_KEYS.items():
        value = recipe.job.get(key)
        shape = node(shape_name)
        if isinstance(value, str) and shape.enum and value not in shape.enum:
            near = sorted(shape.enum_list, key=lambda v: -_similar(v, value))[:4]
            problems.append(Problem(recipe.where(f"job.{key}"), f"job.{key}",
                                    f"{value!r} is not a valid {shape_name}"
                                    + did_you_mean(value, shape.enum_list),
                                    f"one of {len(shape.enum_list)} values, the closest: "
                                    + ", ".join(near)))
    return problems


def _similar(a: str, b: str) -> float:
    import difflib

    return difflib.SequenceMatcher(None, a, b).ratio()
