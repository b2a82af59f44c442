"""Assay core: all the logic, importable without Streamlit. The notebook's front door:

    import core
    store = core.Store("data/workbench.duckdb")
    core.ingest_file(store, "data.jsonl", name="my-sft")
    page = core.query_samples(store, "my-sft", filters=[core.Filter("n_tokens", "gt", 100)])
    core.make_map(store, "my-sft")

Each capability is a package with its public verbs in its own `__init__` (core.maps, core.tags, ...);
the names below are the ones a notebook reaches for first. Nothing heavy is imported until used. A front-door
name never equals a package's name (`core.ingest` is the package; its verb is `core.ingest_file`).
"""

from core._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    # store
    "Store": "store.database",
    "start_job": "store.jobs",
    # ingest
    "ingest_file": "ingest.importer:ingest",
    "ingest_records": "ingest.importer",
    "drop_dataset": "ingest.importer",
    "load_demo": "ingest.demo",
    # browse
    "Filter": "browse.samples",
    "query_samples": "browse.samples",
    "get_sample": "browse.samples",
    "save_selection": "browse.selections",
    # maps
    "embed": "maps.embed",
    "make_map": "maps.points",
    "load_points": "maps.points",
    "neighbours": "maps.neighbours",
    # tags
    "JobConfig": "tags.taggers.job",
    "run_tagging": "tags.taggers.job",
    "current_tags": "tags.results",
    # labels
    "save_schema": "labels.labelling",
    "load_schema_text": "labels.labelling",
    "record_label": "labels.labelling",
    "new_queue": "labels.labelling",
    "consensus_labels": "labels.labelling",
    "agreement_report": "labels.agreement",
    # noise
    "NoiseConfig": "noise.config",
    "run_noise": "noise.run",
    # dedup
    "find_duplicates": "dedup.groups",
    # contamination
    "check_contamination": "contamination.check",
    # mixture
    "load_recipe": "mixture.recipe",
    "recipe_from_dict": "mixture.recipe",
    "preview": "mixture.build",
    "export_mixture": "mixture.export",
    # errors
    "UserError": "errors",
})
