"""Tags page: start a Magpie-style tagging job; compare datasets side by side ("Fixing It in Post");
click a bar or a cell to read its samples; agreement with hand labels and between runs."""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

import core.tags.figures as V
import core.tags.results as T
import core.tags.vocabulary as vocab
import ui_jobs
from core.maps.estimates import run_rate
from core.store.database import Store
from core.store.jobs import Job
from ui import error, md_text, open_store, run_page

st.set_page_config(page_title="Tags · Assay", layout="wide")
DIST_TAGS = ["category", "difficulty", "input_quality", "safety", "language", "turns"]


@st.cache_data(ttl=30, show_spinner=False)
def _current(db: str, datasets: tuple[str, ...], stamp: int) -> pd.DataFrame:
    frames = [T.current_tags(Store(db), d) for d in datasets]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames) if frames else pd.DataFrame()


def _stamp(store: Store) -> int:
    """Changes whenever a tag run starts or finishes, so cached tag frames refresh."""
    return T.tag_runs_stamp(store)


ENSEMBLE_NOTE = ("Several reward models make an ensemble (Coste et al. 2023): each is normalised once on a fixed "
                 "calibration set recorded with the run, then combined by the worst case (min) or by mean - lambda x "
                 "variance. The paper's ensembles are seeds of one reward model trained on the same data, not "
                 "unrelated reward models.")


def backend_text(backend: str) -> str:
    """What the backend computes and how to get the rest, in full (shown before a run)."""
    made, others = vocab.backend_summary(backend)
    lines = [f"The {backend} backend computes: {', '.join(made)}."]
    lines += [f"(The {b} backend computes: {', '.join(g)}.)" for b, g in vocab.BACKEND_GROUPS.items() if b != backend]
    lines += ["How to get the others:"] + [f"{group}: {how}." for group, how in others.items()]
    lines.append("A classifier trained on your own labels (below) makes any tag, the category included.")
    return "\n".join(lines)


def _trained_classifiers(store: Store) -> dict[int, tuple[str, str]]:
    """Finished classifier runs: {run id: (tag, "tag (run N, cv accuracy)")}."""
    from core.tags.taggers.learned import list_models

    models = list_models(store, "classifier")
    models = models[models["status"] == "finished"]
    return {int(r.run_id): (str(r.tag), f"{r.tag} (run {r.run_id}, cv accuracy {r.metrics.get('cv_accuracy')})")
            for r in models.itertuples()}


def job_panel(store: Store, names: list[str]) -> None:
    from core.browse.selections import list_selections
    from core.tags.taggers.job import BACKENDS, JobConfig, run_tagging

    with st.expander("Start a tagging job", expanded=T.tag_runs(store).empty):
        c1, c2, c3 = st.columns([1, 2, 1])
        kind = c1.radio("Tag", ["dataset", "selection"], key="job_kind", horizontal=True)
        selections = list_selections(store)
        if kind == "dataset":
            target = c2.selectbox("Dataset", names, key="job_dataset")
        elif selections.empty:
            c2.info("No saved selections yet (make one on the Map or Datasets page).")
            target = None
        else:
            labels = {int(r.selection_id): f"{r.name} ({r.n_samples} samples, #{r.selection_id})"
                      for r in selections.itertuples()}
            target = c2.selectbox("Selection", list(labels), format_func=labels.get, key="job_selection")
        backend = c3.selectbox("Backend", BACKENDS, key="job_backend",
                               help="offline: CPU-only tags; openai: an LLM judge on an OpenAI-compatible server "
                                    "(vLLM); transformers: an LLM judge generating locally")
        st.text(backend_text(backend))
        opts: dict[str, object] = {}
        if backend != "offline":
            m1, m2 = st.columns(2)
            opts["model"] = m1.text_input("Judge model (served name or local path)", key="job_model") or None
            if backend == "openai":
                opts["base_url"] = m2.text_input("Base URL", "http://localhost:8000/v1", key="job_url")
        r1, r2 = st.columns(2)
        rms = r1.text_input("Reward models for response quality (comma-separated names or paths)", key="job_rms",
                            help=ENSEMBLE_NOTE)
        opts["reward_models"] = [r.strip() for r in rms.split(",") if r.strip()]
        opts["guard_model"] = r2.text_input("Llama Guard model for safety (name or path)", key="job_guard") or None
        if len(opts["reward_models"]) > 1:
            st.caption(ENSEMBLE_NOTE)
            e1, e2 = st.columns(2)
            opts["aggregation"] = e1.radio("Ensemble aggregation", ["min", "uwo"], horizontal=True, key="job_agg",
                                           format_func={"min": "worst case (min)",
                                                        "uwo": "mean - lambda x variance"}.get)
            opts["lam"] = e2.number_input("lambda", 0.0, 100.0, 0.5, 0.1, key="job_lam")
        trained = _trained_classifiers(store)
        if trained:
            chosen = st.multiselect("Apply trained classifiers (tag model runs)", list(trained),
                                    format_func=lambda r: trained[r][1], key="job_classifiers")
            opts["classifiers"] = {trained[r][0]: int(r) for r in chosen}
        cfg = JobConfig(backend=backend, reward_models=opts["reward_models"], guard_model=opts["guard_model"])
        groups = st.multiselect("Tags", list(vocab.TAG_GROUPS), default=cfg.default_tags(store),
                                key=f"job_tags_{backend}", help="By default: what the chosen backend computes")
        opts["language_mode"] = st.radio("Language detection", ["high", "low"], horizontal=True, key="job_lang",
                                         help="high: lingua's accurate mode (loads ~1 GB once); low: fast, less "
                                              "reliable on short texts")
        if rate := run_rate(store, "tag"):
            st.caption(f"Earlier tag runs here took about {1 / rate[0]:.3f} s per sample ({rate[1]} run(s)); a run "
                       "already started with the same settings resumes where it stopped.")
        if st.button("Start tagging", type="primary", key="job_start",
                     disabled=target is None or not groups or ui_jobs.running("tag_job")):
            def work(job: Job) -> object:
                def progress(done: int, total: int, what: str) -> None:
                    job.report(done / max(total, 1), what, done, total)

                return run_tagging(store, dataset=target if kind == "dataset" else None,
                                   selection=target if kind == "selection" else None, backend=backend,
                                   tags=groups + [t for t in opts.get("classifiers", {}) if t not in groups],
                                   api_key=os.environ.get("OPENAI_API_KEY"), progress=progress, **opts)

            ui_jobs.start("tag_job", "tag", f"Tags on {target}", work, str(store.path))
        ui_jobs.follow("tag_job", on_done=_tagging_done)
    ui_jobs.show_announcement("tag_job")


def _tagging_done(job: Job) -> None:
    report = job.result
    ui_jobs.announce("tag_job", report.summary(), ok=bool(report.computed))
    _current.clear()


def train_panel(store: Store, names: list[str]) -> None:
    from core.tags.taggers import learned, reward_proxy

    with st.expander("Offline models: reward proxy and classifiers from labels"):
        prefs = reward_proxy.preference_datasets(store)
        c1, c2 = st.columns(2)
        with c1:
            st.markdown("**Bradley-Terry preference proxy** (tag `preference_proxy`: what a preference set "
                        "preferred, not Magpie's response quality)")
            if not prefs:
                st.info("No preference dataset (with rejected answers) in this store.")
            else:
                pref = st.selectbox("Preference dataset", prefs, key="bt_dataset")
                pairs = st.number_input("Pairs (0 = all)", 0, 1_000_000, 1000, step=100, key="bt_pairs")
                if st.button("Train proxy", key="bt_train"):
                    with st.spinner("Embedding pairs and fitting"):
                        model = reward_proxy.train_reward_proxy(store, pref, max_pairs=int(pairs) or None)
                    st.success(f"Preference proxy run {model.run_id} (trained on {pref}): held-out pairwise accuracy "
                               f"{model.metrics['heldout_pairwise_accuracy']:.3f} on {model.metrics['n_test_pairs']} pairs")
        with c2:
            st.markdown("**Classifier from a labelled column** (any tag)")
            ds = st.selectbox("Dataset", names, key="clf_dataset")
            column = st.text_input("Metadata column with labels", key="clf_column")
            tag = st.text_input("Tag name it predicts", key="clf_tag")
            if st.button("Train classifier", key="clf_train", disabled=not (column and tag)):
                try:
                    model = learned.train_classifier(store, learned.labels_from_meta(store, ds, column).head(2000),
                                                     tag=tag, source=f"{ds} meta.{column}")
                except ValueError as exc:
                    error(exc)
                else:
                    st.success(f"Tag model run {model.run_id}: cv accuracy {model.metrics.get('cv_accuracy')}")
        models = learned.list_models(store)
        if not models.empty:
            models["accuracy"] = models["metrics"].map(lambda m: m.get("accuracy", m.get("cv_accuracy")))
            models["measured_on"] = models["metrics"].map(lambda m: m.get("measured_on", ""))
            st.dataframe(models[["run_id", "kind", "tag", "embed_model", "accuracy", "measured_on", "status"]],
                         hide_index=True, width="stretch")


def methods_table(store: Store, datasets: list[str]) -> None:
    """How each tag of the newest run per dataset was made (one line per tag, in full), then counts and
    measured quality."""
    st.markdown("**How each tag was made** (method, the paper it follows, any deviation)")
    st.text("\n".join(f"{d} · {tag}: {line}" for d, tag, line in T.method_lines(store, datasets)))
    rows = []
    for d in datasets:
        runs = T.tag_runs(store, d)
        if runs.empty:
            continue
        r = runs.iloc[0]
        counts = T.status_counts(store, int(r.run_id)).set_index("tag") if r.n_tagged else pd.DataFrame()
        for tag in r.tags:
            m = r.metrics.get(tag, {})
            c = counts.loc[tag].to_dict() if tag in counts.index else {}
            rows.append({"dataset": d, "run": int(r.run_id), "tag": tag,
                         "measured accuracy": m.get("accuracy"), "measured on": m.get("measured_on", ""),
                         "ok": int(c.get("ok", 0)), "not computed": int(c.get("not_computed", 0)),
                         "failed": int(c.get("parse_error", 0) + c.get("out_of_vocabulary", 0) + c.get("request_error", 0))})
            if m.get("by_benchmark"):
                category_accuracy(d, m)
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def category_accuracy(dataset: str, m: dict) -> None:
    """The category tagger's accuracy per benchmark and per MT-Bench category, as measured in the run."""
    bench = ", ".join(f"{b} {a:.2f} (n={m.get('n_by_benchmark', {}).get(b, '?')})" for b, a in m["by_benchmark"].items())
    cats = ", ".join(f"{c} {a:.2f}" for c, a in m.get("by_mt_bench_category", {}).items())
    st.text(f"{dataset} · category accuracy per benchmark: {bench}\nper MT-Bench category (10 prompts each): {cats}")


def show_samples(store: Store, ids: list[int], what: str) -> None:
    st.caption(md_text(f"{len(ids)} samples: {what} (first 50 shown, as plain text)"))
    st.dataframe(T.samples_text(store, ids), hide_index=True, width="stretch")


def distributions(store: Store, df: pd.DataFrame) -> None:
    present, missing = T.charted_and_missing(store, df, DIST_TAGS)
    for tag, why in missing.items():
        st.info(f"{tag} is not charted: {why}")
    if not present:
        st.info("No categorical tag has values yet.")
        return
    cols = st.columns(2)
    for i, tag in enumerate(present):
        with cols[i % 2]:
            event = st.plotly_chart(V.distribution_figure(df, tag), key=f"dist_{tag}", on_select="rerun",
                                    selection_mode="points", width="stretch")
            for dataset, value in V.selected_points(event)[:1]:
                show_samples(store, V.ids_for_bar(df, tag, dataset, value), f"{dataset}, {tag} = {value}")


def score_by_category(df: pd.DataFrame) -> None:
    scores = [t for t in ("response_quality", "preference_proxy") if t in df.columns
              and (df.get(f"{t}__status") == "ok").any()]
    if not scores:
        st.info("No score tag has values: response_quality needs a reward model, preference_proxy a trained proxy.")
        return
    score = st.radio("Score", scores, horizontal=True, key="score_tag")
    st.plotly_chart(V.reward_by_category_figure(df, score), key="reward_box", width="stretch")


def crosstabs(store: Store, df: pd.DataFrame) -> None:
    pairs = [("category", "difficulty"), ("category", "input_quality")]
    have, _ = T.charted_and_missing(store, df, sorted({t for p in pairs for t in p}))
    drawn = [(r, c) for r, c in pairs if r in have and c in have]
    if not drawn:
        st.info("Cross-tabs need category and difficulty or input_quality values; an LLM judge makes the latter.")
    for row_tag, col_tag in drawn:
        for dataset in sorted(df["dataset"].unique()) if not df.empty else []:
            part = df[df["dataset"] == dataset]
            event = st.plotly_chart(V.crosstab_figure(part, row_tag, col_tag, f"{dataset}: {row_tag} x {col_tag}"),
                                    key=f"ct_{row_tag}_{col_tag}_{dataset}", on_select="rerun",
                                    selection_mode="points", width="stretch")
            for r, c in V.selected_points(event)[:1]:
                show_samples(store, V.ids_for_cell(part, row_tag, col_tag, r, c), f"{row_tag} = {r}, {col_tag} = {c}")


def agreement(store: Store, df: pd.DataFrame, datasets: list[str]) -> None:
    st.markdown("**Machine tags vs hand labels**")
    try:
        from core.labels.labelling import list_schemas
        schemas = list_schemas(store)
    except Exception:  # noqa: BLE001 - the labelling module or its tables are absent
        schemas = pd.DataFrame()
    if schemas.empty:
        st.info("No hand-label schemas yet (Labels page).")
    else:
        c1, c2, c3 = st.columns(3)
        schema = c1.selectbox("Label schema", sorted(schemas["name"].unique()), key="ag_schema")
        field = c2.text_input("Label field", "category", key="ag_field")
        tag = c3.selectbox("Machine tag", [c for c in df.columns if "__" not in c and c != "dataset"] or ["category"],
                           key="ag_tag")
        result = T.agreement_with_labels(store, df, schema, field, tag)
        if result is None:
            st.info("No sample has both a hand label in that field and that tag.")
        else:
            st.write(f"{result['n']} samples with both: agreement {result['agreement']:.1%}, "
                     f"Cohen's kappa {result['kappa']:.3f}")
            st.dataframe(result["table"], width="stretch")
    st.markdown("**Compare two runs**")
    runs = pd.concat([T.tag_runs(store, d) for d in datasets]) if datasets else pd.DataFrame()
    if len(runs) < 2:
        st.info("Two tagging runs are needed to compare.")
        return
    labels = {int(r.run_id): f"run {r.run_id}: {r.dataset or r.target} · {r.backend} · {r.status}"
              for r in runs.itertuples()}
    c1, c2 = st.columns(2)
    a = c1.selectbox("Run A", list(labels), format_func=labels.get, key="cmp_a")
    b = c2.selectbox("Run B", list(labels), index=1, format_func=labels.get, key="cmp_b")
    st.dataframe(T.compare_runs(store, a, b), hide_index=True, width="stretch")


def main() -> None:
    st.title("Tags")
    store, names = open_store()
    job_panel(store, names)
    train_panel(store, names)
    tagged = T.tagged_datasets(store)
    if not tagged:
        st.info("No dataset is tagged yet: start a tagging job above.")
        return
    datasets = st.multiselect("Compare datasets", tagged, default=tagged[:3], key="cmp_datasets")
    if not datasets:
        return
    methods_table(store, datasets)
    df = _current(str(store.path), tuple(datasets), _stamp(store))
    if df.empty:
        st.info("The chosen datasets have no tags yet.")
        return
    tabs = st.tabs(["Distributions", "Score by category", "Cross-tabs", "Agreement", "Per sample"])
    with tabs[0]:
        distributions(store, df)
    with tabs[1]:
        score_by_category(df)
    with tabs[2]:
        crosstabs(store, df)
    with tabs[3]:
        agreement(store, df, datasets)
    with tabs[4]:
        cols = ["dataset"] + [c for c in df.columns if "__" not in c and c != "dataset"]
        st.dataframe(df[cols].head(1000), width="stretch")
        st.download_button("Download tags (JSON lines)", df[cols].reset_index().to_json(orient="records", lines=True),
                           file_name="tags.jsonl", key="dl_tags")
    st.caption(f"Every tag traces to the run that made it (Per sample: one column per tag). Store: {store.path}")


run_page(main)
