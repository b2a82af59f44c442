"""Hand labelling: schemas, append-only label events, queues with suggestions and undo, consensus
and inter-annotator agreement.
"""

from core._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "LabelSchema": "labelling",
    "LabelError": "labelling",
    "load_schema_file": "labelling",
    "load_schema_text": "labelling",
    "save_schema": "labelling",
    "get_schema": "labelling",
    "list_schemas": "labelling",
    "record_label": "labelling",
    "record_bulk": "labelling",
    "record_skip": "labelling",
    "undo_last": "labelling",
    "current_labels": "labelling",
    "consensus_labels": "labelling",
    "new_queue": "labelling",
    "suggestions": "labelling",
    "export_labels": "labelling",
    "agreement_report": "agreement",
    "krippendorff_alpha": "agreement",
    "cohen_kappa": "agreement",
})
