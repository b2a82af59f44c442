"""One signal layer: every per-sample value a run produced, registered once and read by every consumer
(the Datasets page and `assay show`, the Map, mixture recipes, the Label page, dedup, exports).

    from core import signals
    signals.available(store, "gsm8k-train")                       # what this dataset has
    signals.values(store, "tag.category", dataset="gsm8k-train")  # sample_id, value
    signals.parse_filter("noise.cleanlab.flag:is_true")           # a browse Filter

Registry and providers: core/signals/registry.py. Filter grammar: core/signals/grammar.py.
"""

from core.signals.grammar import OPS, format_filter, parse_filter
from core.signals.registry import (
    KINDS,
    Bound,
    Signal,
    available,
    describe,
    get,
    newest_finished,
    register,
    sample_signals,
    unregister,
    values,
)

__all__ = ["KINDS", "OPS", "Bound", "Signal", "available", "describe", "format_filter", "get", "newest_finished",
           "parse_filter", "register", "sample_signals", "unregister", "values"]
