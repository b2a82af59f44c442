"""Names for the values of a label field (0 -> "hate speech"), kept with the dataset and shown by every
noise view instead of bare codes.

Stored in the dataset's own `datasets.load_options` JSON, under "label_names": {field: {value: name}},
so they need no schema change and go when the dataset goes. The field is a label source's key: a
metadata field's name for `class` / `meta:class`, else the whole source spec (`votes:...`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from core.errors import InputError
from core.store.database import Store

KEY = "label_names"
MAX_NAME = 100
LABEL_COLUMNS = ("given_label", "predicted_label", "consensus_label", "worst_class")


def source_key(source: str) -> str:
    """The key names are kept under for a label source: `meta:class` and `class` -> `class`."""
    from core.noise.features import parse_label_source

    src = parse_label_source(source)
    return src.fields[0] if src.kind == "meta" else src.spec


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def label_names(store: Store, dataset: str, source: str) -> dict[str, str]:
    """{value: name} for a dataset's label source ({} when none were set)."""
    options = store.dataset(dataset).load_options or {}
    return dict((options.get(KEY) or {}).get(source_key(source)) or {})


def set_label_names(store: Store, dataset: str, source: str, names: Mapping[Any, str] | None) -> dict[str, str]:
    """Set (replace) the names of a label source's values, e.g. {0: "hate speech", 1: "offensive", 2: "neither"};
    empty names are dropped, and None or {} removes them. Returns what is stored."""
    clean: dict[str, str] = {}
    for value, name in (names or {}).items():
        text = " ".join(str(name if name is not None else "").split())
        if len(text) > MAX_NAME:
            raise InputError(f"the name for value {value!r} of {source!r} is {len(text)} characters; "
                             f"at most {MAX_NAME} are allowed")
        if text:
            clean[_value_text(value)] = text
    key = source_key(source)
    with store.transaction() as con:
        row = con.execute("SELECT load_options FROM datasets WHERE name = ?", [dataset]).fetchone()
        if row is None:
            from core.errors import NotFoundError

            raise NotFoundError(f"no dataset named {dataset!r}")
        options = json.loads(row[0]) if row[0] else {}
        stored = dict(options.get(KEY) or {})
        if clean:
            stored[key] = clean
        else:
            stored.pop(key, None)
        options[KEY] = stored
        con.execute("UPDATE datasets SET load_options = ? WHERE name = ?", [json.dumps(options), dataset])
    return clean


def display(value: Any, names: Mapping[str, str]) -> str:
    """How a label value reads: "hate speech (0)" where it has a name, else the value itself."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    text = _value_text(value)
    name = names.get(text)
    return f"{name} ({text})" if name and name != text else text


def with_names(df: pd.DataFrame, names: Mapping[str, str], columns: Iterable[str] = LABEL_COLUMNS) -> pd.DataFrame:
    """A copy of `df` with its label columns shown by name (unchanged when there are no names)."""
    if not names:
        return df
    out = df.copy()
    for col in columns:
        if col in out:
            out[col] = out[col].map(lambda v: display(v, names))
    return out
