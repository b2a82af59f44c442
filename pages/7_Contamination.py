"""Contamination page: check a training set against evaluation sets; report, chart, drill-down, exclude."""

from __future__ import annotations

import json

import streamlit as st

import core.browse.selections as selection
import core.contamination.check as contam
import ui_jobs
from core.browse.display import plural, table
from core.maps.estimates import describe_seconds, embedding_plan
from core.store.database import Store
from core.store.jobs import Job
from ui import caption, chart, marked_html, md_text, open_store, run_page

METHOD_LABELS = {"ngram13": "n-gram (GPT-3, N per benchmark)", "ngram8": "8-gram (PaLM)", "embedding": "embedding",
                 "mink": "Min-K% Prob (eval items)", "minkpp": "Min-K%++ (eval items)"}


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
        mink_thr = c3.text_input("Count eval items with Min-K% at least (optional)")
        go = st.form_submit_button("Check contamination", type="primary")
    if dataset and "embedding" in methods:
        st.caption(contamination_job_plan(store, dataset, against or eval_names))
    if go and dataset and not ui_jobs.running("contamination_job"):
        def work(job: Job) -> contam.ContaminationReport:
            return contam.check_contamination(
                store, dataset, against or None, methods=methods, max_train_df=int(max_df), palm_threshold=palm,
                embed_threshold=cos, mink_model=mink_model.strip() or None, mink_k=mink_k,
                mink_threshold=float(mink_thr) if mink_thr.strip() else None,
                progress=lambda stage, frac: job.report(frac, stage))

        ui_jobs.start("contamination_job", "contamination", f"Contamination of {dataset}", work, str(store.path))
    ui_jobs.follow("contamination_job", on_done=_contamination_done)
    ui_jobs.show_announcement("contamination_job")


def _contamination_done(job: Job) -> None:
    report = job.result
    st.session_state["contamination_run"] = report.run_id
    ui_jobs.announce("contamination_job", f"Run {report.run_id}: "
                     f"{plural(int(report.summary.n_contaminated.sum()), 'flagged (sample, eval set) pair')}.")


def contamination_job_plan(store: Store, dataset: str, eval_names: list[str]) -> str:
    """The embedding work the check needs (the training set and every eval set), before it starts."""
    plans = [embedding_plan(store, name, model=contam.DEFAULTS.get("embed_model"),
                            text=contam.DEFAULTS["embed_text"]) for name in [dataset, *eval_names]]
    todo = sum(p.n_to_compute for p in plans)
    if todo == 0:
        return "Embeddings for the training set and the evaluation sets are all cached: nothing to embed."
    seconds = sum(p.seconds for p in plans)
    cached = sum(p.n_cached for p in plans)
    return (f"Before the check: {todo:,} texts to embed ({cached:,} cached), about {describe_seconds(seconds)} "
            f"({plans[0].rate_source}, {plans[0].rate:,.0f} texts/s); the n-gram methods take seconds.")


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
    for line in contam.method_lines(store, run_id):
        st.caption(f"Method: {line}")
    st.subheader("Per evaluation set")
    st.dataframe(**table(summary), hide_index=True)
    capped = contam.capped_ngrams(store, run_id)
    if not capped.empty:
        st.caption(f"GPT-3's frequency cap ignored these n-grams (in too many training samples); "
                   f"{len(capped)} listed with their eval items")
        st.dataframe(**table(capped), hide_index=True, height=180)
    chart(contam.summary_figure(summary), key="summary_chart")
    res = contam.results(store, run_id)
    for tab, name in zip(st.tabs([md_text(n) for n in summary.eval_set]), summary.eval_set, strict=True):
        with tab:
            part = res[res.eval_set == name]
            if part.embed_cosine.notna().any():
                chart(contam.cosine_figure(part, name), key=f"cos_{name}")
            scores = contam.eval_item_scores(store, run_id, name)
            if scores[["mink_score", "minkpp_score"]].notna().any().any():
                st.caption("Eval items under the LM (higher: more likely in its pre-training data)")
                st.dataframe(scores, hide_index=True, height=180)
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
    caption(f"Training sample {row.sample_id}" + (" (overlap highlighted)" if found.spans else ""), c1)
    # highlight_html escapes the dataset text before marking the spans; st.html interprets no markdown.
    marked_html(contam.highlight_html(contam.sample_text(store, int(row.sample_id)), found.spans), c1)
    if found.eval_id is None:
        caption("Min-K% Prob scores the sample alone: no evaluation item to compare with.", c2)
        return
    how = f", cosine {row.embed_cosine:.3f}" if found.method == "embedding" else ""
    caption(f"Evaluation item {found.eval_id} ({row.eval_set}), found by {METHOD_LABELS[found.method]}{how}", c2)
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


run_page(main)
