"""Duplicates page: find exact / near / SemDeDup / cosine-group duplicates, browse them side by side, exclude copies."""

from __future__ import annotations

import json

import streamlit as st

import core.browse.selections as selection
import core.dedup.groups as dedup
from core.browse.display import plural, table
from core.store.database import Store, StoreError
from ui import caption, error, marked_html, open_store, run_page


def run_form(store: Store, names: list[str]) -> None:
    with st.form("dedup"):
        scope = st.multiselect("Datasets (none = across all datasets)", names)
        method = st.radio("Method", dedup.METHODS, horizontal=True,
                          help="exact: same words after normalisation; near: MinHash + LSH on word shingles; "
                               "semdedup: SemDeDup (Abbas et al. 2023) on stored embeddings, cosine > threshold "
                               "(= 1 - eps) removed, the point farthest from its centroid kept; semantic: cosine "
                               "groups (pairs >= threshold chained), not SemDeDup")
        c1, c2, c3, c4 = st.columns(4)
        threshold = c1.slider("Threshold (Jaccard or cosine)", 0.3, 1.0, 0.7, 0.01,
                              help="near: estimated Jaccard (default 0.7); semdedup and semantic: cosine (try 0.95)")
        num_perm = c2.number_input("Permutations", 16, 512, dedup.DEFAULTS["num_perm"], 16)
        shingle = c3.number_input("Words per shingle", 1, 13, dedup.DEFAULTS["shingle"])
        keep = c4.selectbox("Representative", dedup.KEEP_RULES,
                            help="first loaded, longest response, or highest response_quality tag "
                                 "(SemDeDup always keeps by the paper's rule)")
        go = st.form_submit_button("Find duplicates", type="primary")
    if not go:
        return
    bar = st.progress(0.0, text="Reading samples")

    def progress(done: int, total: int | None) -> None:
        bar.progress(min(done / max(total or 1, 1), 1.0), text=f"{done:,} of {plural(total or 0, 'sample')}")

    try:
        result = dedup.find_duplicates(store, scope or None, method=method, threshold=float(threshold),
                                       num_perm=int(num_perm), shingle=int(shingle), keep=keep, progress=progress)
    except (ValueError, StoreError) as exc:
        error(exc)
        return
    bar.empty()
    st.session_state["dedup_run"] = result.run_id
    st.success(f"Run {result.run_id}: {plural(result.n_groups, 'group')}, {plural(result.n_to_drop, 'sample')} to drop "
               f"(representative: {result.keep_used}).")


def pick_run(store: Store) -> int | None:
    runs = dedup.dedup_runs(store)
    runs = runs[runs.status == "finished"]
    if runs.empty:
        st.info("No duplicate search yet: run one above.")
        return None
    labels = {int(r.run_id): f"run {r.run_id}: {json.loads(r.params)['method']} on "
              f"{json.loads(r.params)['datasets']}, {plural(int(r.n_groups), 'group')}" for r in runs.itertuples()}
    ids = list(labels)
    wanted = st.session_state.get("dedup_run")
    return st.selectbox("Run", ids, index=ids.index(wanted) if wanted in ids else 0, format_func=labels.get)


def show_group(store: Store, run_id: int) -> None:
    summary = dedup.group_summary(store, run_id)
    if summary.empty:
        st.info("No duplicates found in this run.")
        return
    st.dataframe(**table(summary), hide_index=True, height=220)
    group = st.selectbox("Group", summary.group_id.tolist(),
                         format_func=lambda g: f"group {g} ({plural(int(summary.set_index('group_id').loc[g, 'size']), 'sample')})")
    members = dedup.duplicate_groups(store, run_id, group_id=int(group), with_text=True)
    rep = members[members.is_representative].iloc[0]
    others = members[~members.is_representative]
    st.dataframe(**table(members.drop(columns=["text"])), hide_index=True)
    other_id = st.selectbox("Compare the representative with", others.sample_id.tolist())
    other = others.set_index("sample_id").loc[other_id]
    left, right = dedup.diff_html(rep.text, other.text)  # escapes the dataset text before marking it
    c1, c2 = st.columns(2)
    caption(f"Kept: sample {rep.sample_id} ({rep.dataset} #{rep.row_idx})", c1)
    marked_html(left, c1)
    caption(f"Duplicate: sample {other_id} ({other.dataset} #{other.row_idx}), similarity {other.similarity:.3f}", c2)
    marked_html(right, c2)


def exclude_action(store: Store, run_id: int) -> None:
    drop = dedup.duplicate_ids_to_drop(store, run_id)
    st.caption(f"{plural(len(drop), 'sample')} {'is a duplicate' if len(drop) == 1 else 'are duplicates'} of a kept representative.")
    if drop and st.button(f"Exclude the {plural(len(drop), 'duplicate')} from mixtures", key="exclude_dups"):
        n = selection.exclude(store, drop, reason="duplicate", origin=f"dedup run {run_id}")
        st.success(f"Excluded {plural(n, 'sample')} (undo from the mixture page or with selection.include).")


def main() -> None:
    st.set_page_config(page_title="Duplicates", layout="wide")
    st.title("Duplicates")
    store, names = open_store()
    run_form(store, names)
    run_id = pick_run(store)
    if run_id is None:
        return
    st.caption(f"Method: {dedup.method_note(store, run_id)}")
    show_group(store, run_id)
    exclude_action(store, run_id)


run_page(main)
