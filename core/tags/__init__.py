"""Magpie-style quality tags: the vocabulary, the taggers (offline, LLM judge, reward models,
Llama Guard) and the job that runs them, the stored results and their figures.
"""

from core._exports import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "JobConfig": "taggers.job",
    "run_tagging": "taggers.job",
    "TagReport": "taggers.job",
    "current_tags": "results",
    "tag_runs": "results",
    "run_tags": "results",
    "compare_runs": "results",
    "confusion": "results",
    "widen": "results",
    "TASK_CATEGORIES": "vocabulary",
    "TAG_GROUPS": "vocabulary",
    "VOCABULARY": "vocabulary",
})
