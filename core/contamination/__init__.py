"""Benchmark contamination: n-gram overlap (GPT-3 style 13-grams, 8-grams), embedding similarity and
Min-K%/Min-K%++ on eval items.
"""

from core._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "check_contamination": "check",
    "contamination_runs": "check",
    "results": "check",
    "eval_summary": "check",
    "flagged_ids": "check",
    "ContaminationReport": "check",
})
