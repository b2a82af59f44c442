"""Signal provider for contamination (core/signals): the status and the matched evaluation item from the
newest finished contamination run of each dataset. Apart from core/contamination/check.py so that listing signals
does not import its n-gram and language-model machinery."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CLEAN, CONTAMINATED = "clean", "contaminated"


def _contamination_runs(con: Any, dataset_ids: Sequence[int], run: int | None) -> tuple[list[int], list[int]]:
    """(runs to read, datasets they checked): `run`, or the newest finished contamination run per dataset."""
    from core.signals.registry import newest_finished

    runs = newest_finished(con, "contamination", dataset_ids, run) or [-1]
    checked = con.execute("SELECT DISTINCT dataset_id FROM runs WHERE list_contains(?, run_id)", [runs]).fetchall()
    return runs, [int(r[0]) for r in checked]


def _status(con: Any, dataset_ids: Sequence[int], run: int | None) -> Any:
    from core.signals.registry import Bound

    runs, checked = _contamination_runs(con, dataset_ids, run)
    # Results hold only samples with some evidence: the rest of a checked dataset is clean. Sparse, so that a
    # filter joins the flagged few rather than every sample (core/signals/registry.py, Bound).
    return Bound(f"SELECT DISTINCT sample_id, '{CONTAMINATED}' AS value FROM contamination_results "
                 "WHERE list_contains(?::INTEGER[], run_id) AND contaminated",
                 [runs], tuple(r for r in runs if r >= 0), default=CLEAN, covers=tuple(checked))


def _item(con: Any, dataset_ids: Sequence[int], run: int | None) -> Any:
    from core.signals.registry import Bound

    runs, _ = _contamination_runs(con, dataset_ids, run)
    return Bound("SELECT c.sample_id, min(d.name || ' #' || e.source_id) AS value FROM contamination_results c "
                 "JOIN samples e ON e.id = coalesce(c.ngram13_eval_id, c.ngram8_eval_id, c.embed_eval_id) "
                 "JOIN datasets d ON d.dataset_id = e.dataset_id "
                 "WHERE list_contains(?::INTEGER[], c.run_id) AND c.contaminated GROUP BY c.sample_id",
                 [runs], tuple(r for r in runs if r >= 0))


def signals(con: Any, dataset_ids: Sequence[int] | None) -> list[Any]:
    """Signal provider: contamination (status) and contamination.item, where a contamination run finished."""
    from core.signals.registry import Signal

    if not con.execute("SELECT 1 FROM runs WHERE kind = 'contamination' AND status = 'finished' LIMIT 1").fetchall():
        return []
    method = ("newest finished contamination run of the dataset: GPT-3 13-gram, PaLM 8-gram, embedding and "
              "Min-K% checks against the evaluation sets (core/contamination/check.py, assay contamination)")
    return [
        Signal("contamination", "category", f"contamination status, {method}",
               f"{CONTAMINATED!r} = some check flagged it; missing = the dataset was never checked", _status,
               family="contamination"),
        Signal("contamination.item", "text", f"the evaluation item a contaminated sample matched, {method}",
               "eval set and the item's source id; missing = not contaminated", _item, family="contamination"),
    ]
