"""Mixture design and reproducible export (issue 8).

    from core.mixture import load_recipe, preview, export_mixture
    recipe = load_recipe("recipe.yaml")
    comp = preview(store, recipe)          # plan (arithmetic, issues), filter counts + examples, warnings
    comp.composition, comp.sources, comp.warnings
    result = export_mixture(store, recipe, "out/my-mix")   # files + manifest.json + datasheet.md

Modules: recipe (YAML <-> dataclasses), filters (candidate table, hooks to tags/labels/flags), plan (the
arithmetic), select (random, top, diverse, kMQ), build (composition), warnings, export, datasheet, saved.
"""

from core.mixture.build import Composition, MixturePlanError, preview
from core.mixture.export import ExportExistsError, ExportResult, export_mixture, zip_export
from core.mixture.filters import MixtureDataError
from core.mixture.recipe import Recipe, RecipeError, dump_recipe, load_recipe, recipe_from_dict
from core.mixture.saved import get_recipe, list_exports, list_recipes, save_recipe

__all__ = [
    "Composition", "ExportExistsError", "ExportResult", "MixtureDataError", "MixturePlanError", "Recipe",
    "RecipeError", "dump_recipe", "export_mixture", "get_recipe", "list_exports", "list_recipes", "load_recipe",
    "preview", "recipe_from_dict", "save_recipe", "zip_export",
]
