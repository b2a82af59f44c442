"""What a researcher does about a suspicious label: relabel it (a hand-label event), exclude it from
mixtures, or send a set to the labelling queue (a saved selection)."""

from __future__ import annotations

from collections.abc import Iterable

from core.noise.features import relabel_schema_name
from core.noise.run import run_info
from core.store.database import Store

EXCLUDE_REASON = "noisy label"


def relabel_schema(store: Store, run_id: int):  # noqa: ANN201 - core.labels.labelling.LabelSchema
    """The (saved) single-choice schema that holds hand corrections for this run's dataset and label source."""
    from core.labels.labelling import parse_schema, save_schema

    info = run_info(store, run_id)
    name = relabel_schema_name(info["dataset"], info["label_source"])
    spec = {"name": name, "title": f"Corrected {info['label_source']} of {info['dataset']}",
            "fields": [{"name": "label", "type": "single_choice", "options": info["classes"]}]}
    return save_schema(store, parse_schema(spec), created_by="noise")


def relabel(store: Store, run_id: int, sample_id: int, label: str, *, annotator: str,
            session: str | None = None) -> int:
    """Record a hand correction of one sample's label (origin 'noise'); returns the event id.
    A rerun of the same dataset and label source uses it in place of the original label."""
    from core.labels.labelling import record_label

    schema = relabel_schema(store, run_id)
    return record_label(store, schema, int(sample_id), {"label": label}, annotator=annotator, origin="noise",
                        session=session)[0]


def exclude_noisy(store: Store, sample_ids: Iterable[int], *, who: str = "") -> int:
    """Mark samples as excluded from mixtures with the reason 'noisy label'."""
    from core.browse.selections import exclude

    return exclude(store, sample_ids, reason=EXCLUDE_REASON, origin="noise", who=who)


def send_to_queue(store: Store, run_id: int, sample_ids: Iterable[int], *, name: str | None = None,
                  who: str = "") -> int:
    """Save the samples as a selection (origin 'noise') that the labelling page offers as a queue."""
    from core.browse.selections import save_selection

    ids = list(sample_ids)
    info = run_info(store, run_id)
    return save_selection(store, name or f"noise run {run_id}: {len(ids)} suspicious {info['label_source']}",
                          ids, origin="noise", description=f"suspicious labels from noise run {run_id}",
                          predicate={"noise_run_id": run_id}, created_by=who)
