"""Recipes: one YAML file per training setup, merged over base files and checked by schema.

``load_recipe(path)`` returns a :class:`Recipe`; ``discover_recipes(dir)`` lists the recipe files.
The schema (keys, types, defaults) is :mod:`mtgrpo.recipes.schema`; see docs/recipes.md.
"""

from mtgrpo.recipes.loader import Recipe, discover_recipes, find_root, load_recipe, relocate

__all__ = ["Recipe", "discover_recipes", "find_root", "load_recipe", "relocate"]
