"""Mixture design and reproducible export (issue 8).

    from core.mixture import load_recipe, preview, export_mixture
    recipe = load_recipe("recipe.yaml")
    comp = preview(store, recipe)          # plan (arithmetic, issues), filter counts + examples, warnings
    comp.composition, comp.sources, comp.warnings
    result = export_mixture(store, recipe, "out/my-mix")   # files + manifest.json + datasheet.md

Modules: recipe (YAML <-> dataclasses), filters (candidate table, hooks to tags/labels/flags), plan (the
arithmetic), select (random, top, diverse, kMQ), build (composition), warnings, export, datasheet, saved.
"""

from core._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "Composition": "build",
    "MixturePlanError": "build",
    "preview": "build",
    "ExportExistsError": "export",
    "ExportResult": "export",
    "export_mixture": "export",
    "zip_export": "export",
    "MixtureDataError": "filters",
    "Recipe": "recipe",
    "RecipeError": "recipe",
    "dump_recipe": "recipe",
    "load_recipe": "recipe",
    "recipe_from_dict": "recipe",
    "get_recipe": "saved",
    "list_exports": "saved",
    "list_recipes": "saved",
    "save_recipe": "saved",
})
