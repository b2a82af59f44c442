"""Contamination page: check a training set against evaluation sets; report, chart, drill-down, exclude."""

from __future__ import annotations

import json

import streamlit as st

from core import contamination as contam
from core import selection
from core.display import plural, table
from core.store import Store, StoreError
from ui import open_store

METHOD_LABELS = {"ngram13": "13-gram (GPT-3)", "ngram8": "8-gram (PaLM)", "embedding": "embedding",
                 "mink": "Min-K% Prob"}


def run_form(store: Store) -> None:
    ds = store.datasets()
    train_names = ds[~ds.is_eval].name.tolist()
    eval_names = ds[ds.is_eval].name.tolist()
    if not eval_names:
        st.info("No dataset is marked as an evaluation set; load benchmarks with is_eval to check against them.")
        return
    with st.form("contamination"):
        c1, c2 = st.columns(2)
        dataset = c1.selectbox("Training dataset", train_names)
        against = c2.multiselect("Evaluation sets", eval_names, default=eval_names)
        methods = st.multiselect("Methods", contam.METHODS, default=list(contam.DEFAULT_METHODS),
                                 format_func=METHOD_LABELS.get)
        c1, c2, c3 = st.columns(3)
        max_df = c1.number_input("Ignore 13-grams in more training samples than", 1, 10_000,
                                 contam.DEFAULTS["max_train_df"])
        palm = c2.slider("8-gram share (PaLM)", 0.3, 1.0, contam.DEFAULTS["palm_threshold"], 0.05)
        cos = c3.slider("Embedding cosine", 0.5, 1.0, contam.DEFAULTS["embed_threshold"], 0.01)
        c1, c2, c3 = st.columns(3)
        mink_model = c1.text_input("Causal LM for Min-K% (name or local path)")
        mink_k = c2.slider("Min-K% k", 0.05, 0.6, contam.DEFAULTS["mink_k"], 0.05)
        mink_thr = c3.text_input("Flag Min-K% scores at least (optional)")
        go = st.form_submit_button("Check contamination", type="primary")
    if not go or not dataset:
        return
    bar = st.progress(0.0, text="Starting")
    try:
        report = contam.check_contamination(
            store, dataset, against or None, methods=methods, max_train_df=int(max_df), palm_threshold=palm,
            embed_threshold=cos, mink_model=mink_model.strip() or None, mink_k=mink_k,
            mink_threshold=float(mink_thr) if mink_thr.strip() else None,
            progress=lambda stage, frac: bar.progress(min(max(frac, 0.0), 1.0), text=stage))
    except (ValueError, KeyError, StoreError, OSError) as exc:
        st.error(str(exc))
        return
    bar.empty()
    st.session_state["contamination_run"] = report.run_id
    st.success(f"Run {report.run_id}: {plural(int(report.summary.n_contaminated.sum()), 'flagged (sample, eval set) pair')}.")


def pick_run(store: Store) -> int | None:
    runs = contam.contamination_runs(store)
    runs = runs[runs.status == "finished"]
    if runs.empty:
        st.info("No contamination check yet: run one above.")
        return None
    labels = {int(r.run_id): f"run {r.run_id}: {r.dataset} vs {', '.join(json.loads(r.params)['against'])}"
              for r in runs.itertuples()}
    ids = list(labels)
    wanted = st.session_state.get("contamination_run")
    return st.selectbox("Run", ids, index=ids.index(wanted) if wanted in ids else 0, format_func=labels.get)


def report_view(store: Store, run_id: int) -> None:
    summary = contam.eval_summary(store, run_id)
    st.subheader("Per evaluation set")
    st.dataframe(**table(summary), hide_index=True)
    st.plotly_chart(contam.summary_figure(summary), key="summary_chart")
    res = contam.results(store, run_id)
    for tab, name in zip(st.tabs(summary.eval_set.tolist()), summary.eval_set, strict=True):
        with tab:
            part = res[res.eval_set == name]
            if part.embed_cosine.notna().any():
                st.plotly_chart(contam.cosine_figure(part, name), key=f"cos_{name}")
            hit = contam.eval_items_hit(store, run_id, name)
            st.caption(f"{plural(len(hit), 'evaluation item')} hit")
            st.dataframe(**table(hit), hide_index=True, height=180)
    flagged = res[res.contaminated]
    st.subheader(f"Flagged samples ({flagged.sample_id.nunique()})")
    cols = ["sample_id", "eval_set", "flag_ngram13", "flag_ngram8", "flag_embedding", "flag_mink", "ngram13_hits",
            "ngram8_train_frac", "ngram8_eval_frac", "embed_cosine", "mink_score"]
    st.dataframe(**table(flagged[cols]), hide_index=True, height=240)
    if not flagged.empty:
        drill_down(store, flagged)
        exclude_action(store, run_id, set(int(x) for x in flagged.sample_id))


def drill_down(store: Store, flagged) -> None:  # noqa: ANN001 - a DataFrame
    keys = [f"{r.sample_id} vs {r.eval_set}" for r in flagged.itertuples()]
    pick = st.selectbox("Drill down", range(len(keys)), format_func=lambda i: keys[i])
    row = flagged.iloc[int(pick)]
    found = contam.evidence(row)
    c1, c2 = st.columns(2)
    c1.caption(f"Training sample {row.sample_id}" + (" (overlap highlighted)" if found.spans else ""))
    # highlight_html escapes the dataset text before marking the spans.
    c1.markdown(contam.highlight_html(contam.sample_text(store, int(row.sample_id)), found.spans),
                unsafe_allow_html=True)
    if found.eval_id is None:
        c2.caption("Min-K% Prob scores the sample alone: no evaluation item to compare with.")
        return
    how = f", cosine {row.embed_cosine:.3f}" if found.method == "embedding" else ""
    c2.caption(f"Evaluation item {found.eval_id} ({row.eval_set}), found by {METHOD_LABELS[found.method]}{how}")
    c2.text(contam.sample_text(store, found.eval_id))


def exclude_action(store: Store, run_id: int, ids: set[int]) -> None:
    if st.button(f"Exclude the {plural(len(ids), 'flagged sample')} from mixtures", key="exclude_contaminated"):
        n = selection.exclude(store, ids, reason="contamination", origin=f"contamination run {run_id}")
        st.success(f"Excluded {plural(n, 'sample')}.")


def main() -> None:
    st.set_page_config(page_title="Contamination", layout="wide")
    st.title("Benchmark contamination")
    store, _names = open_store()
    run_form(store)
    run_id = pick_run(store)
    if run_id is not None:
        report_view(store, run_id)


main()
