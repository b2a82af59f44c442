"""Loading datasets: readers for every file format, the shapes records come in (chat, preference,
tool calls, ...), the columnar fast path, token counts, field accounting, and the demo loader.
"""

from core._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "ingest": "importer",
    "ingest_records": "importer",
    "drop_dataset": "importer",
    "IngestReport": "importer",
    "IngestError": "importer",
    "DatasetExistsError": "importer",
    "DatasetNameError": "importer",
    "load_demo": "demo",
    "load_demo_from_hub": "demo",
})
