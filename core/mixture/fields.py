"""The fields a recipe's proportions can be grouped by, as they exist in the store for the chosen sources:
`source`, the sources' categorical meta fields, their machine tags, the label schemas' choice fields and
the other category and flag signals (core/signals)."""

from __future__ import annotations

from collections.abc import Sequence

from core.browse.samples import column_catalog
from core.store.database import Store

GROUP_KINDS = ("category", "bool")  # a proportion is a share per value: only fields with few values


def grouping_fields(store: Store, datasets: Sequence[str]) -> list[str]:
    """`source`, then `meta.<key>`, `tag.<name>` and `label.<schema>.<field>` references that these
    datasets have (the same spelling a recipe's `targets.by` takes)."""
    names = list(datasets)
    fields = ["source"]
    for name in names:
        for column in column_catalog(store, name):
            ref = f"meta.{column.key}"
            if column.source == "meta" and column.kind in GROUP_KINDS and ref not in fields:
                fields.append(ref)
    if names:
        tags = store.query_df(
            "SELECT DISTINCT t.tag FROM tags t JOIN samples s ON s.id = t.sample_id JOIN datasets d USING (dataset_id) "
            "WHERE d.name IN (SELECT unnest(?::VARCHAR[])) AND t.status = 'ok' AND t.value IS NOT NULL ORDER BY t.tag",
            [names])
        fields += [f"tag.{t}" for t in tags["tag"]]
    import core.labels.labelling as labels  # imported here: labels pulls in the schema vocabularies

    for schema in labels.list_schemas(store)["name"]:
        fields += [f"label.{schema}.{f.name}" for f in labels.get_schema(store, schema).fields
                   if f.type != "free_text"]
    if names:
        from core import signals

        # Any other signal with few values (categories, flags) groups too: signal:dup.status, signal:map.cluster.
        fields += [f"signal:{s.name}" for s in signals.available(store, names) if s.kind in GROUP_KINDS
                   and s.family not in ("tags", "labels")]
    return fields
