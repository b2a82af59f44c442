"""Duplicates: exact, MinHash near-duplicates and semantic (SemDeDup) groups, with the rule that
chooses which member of a group to keep.
"""

from core._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "find_duplicates": "groups",
    "dedup_runs": "groups",
    "duplicate_groups": "groups",
    "group_summary": "groups",
    "duplicate_ids_to_drop": "groups",
})
