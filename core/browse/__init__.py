"""Browsing samples: filtered, sorted pages over any dataset, one sample's display, saved
selections and exclusions.
"""

from core._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "Filter": "samples",
    "Page": "samples",
    "Column": "samples",
    "query_samples": "samples",
    "matching_ids": "samples",
    "column_catalog": "samples",
    "get_sample": "samples",
    "top_values": "samples",
    "save_selection": "selections",
    "list_selections": "selections",
    "selection_ids": "selections",
    "exclude": "selections",
    "include": "selections",
    "excluded_ids": "selections",
})
