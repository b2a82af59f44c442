"""Streamlit helpers shared by the pages (UI only: the logic stays in core/)."""

from __future__ import annotations

import streamlit as st

from core.store import Store, StoreError, default_db_path

EMPTY_STORE = ("The store has no datasets yet. Load one with the upload form on the home page, or from a terminal "
               "with `assay ingest PATH --name NAME` (or `assay demo` for the demo datasets).")


def open_store() -> tuple[Store, list[str]]:
    """The workbench's store and its dataset names. Stops the page with a clear message where the store
    cannot be opened (busy, or from a newer Assay) or holds no dataset yet."""
    store = Store(default_db_path())
    try:
        names = store.dataset_names()
    except StoreError as exc:
        st.error(str(exc))
        st.stop()
    if not names:
        st.info(EMPTY_STORE)
        st.stop()
    return store, names
