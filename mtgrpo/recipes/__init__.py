"""Recipes: one YAML file per training setup, merged over base files and checked by schema.

``load_recipe(path)`` returns a :class:`Recipe` (raising ``UserError`` on any problem);
``read_recipe(path)`` returns it with its problems (possibly partial); ``recipe_from_data(data,
source=...)`` types a merged recipe held in memory; ``discover_recipes(dir)`` lists the recipe
files.
The schema (keys, types, defaults) is :mod:`mtgrpo.recipes.schema`; see docs/recipes.md.
"""

from mtgrpo.recipes.loader import (Recipe, discover_recipes, find_root, load_recipe, read_recipe,
                                   recipe_from_data, relocate)

__all__ = ["Recipe", "discover_recipes", "find_root", "load_recipe", "read_recipe",
           "recipe_from_data", "relocate"]
