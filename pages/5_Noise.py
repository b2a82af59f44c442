"""Noise: find probably-mislabelled samples, see how a reweighting method would down-weight them, fix them.

Thin page: every computation and write goes through core.noise (run, actions) and the figures come from
core.viz_noise. Dataset text and labels are shown with st.text / st.dataframe, never as markdown.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui_jobs
from core.embed import DEFAULT_MODEL
from core.estimates import describe_seconds, embedding_plan, run_rate
from core.jobs import Job
from core.noise import actions
from core.noise.features import label_sources, parse_label_source
from core.noise.run import (
    DEFAULT_METHODS,
    METHODS,
    NoiseConfig,
    annotator_quality,
    confusion,
    load_scores,
    neighbour_evidence,
    noise_runs,
    run_info,
    run_noise,
    suspicious,
    trajectories,
)
from core.store import Store
from core.viz_noise import cartography_map, confusion_figure, weight_distribution, weight_trajectories
from ui import md_text, open_store, run_page, success

SERIES = {"rescaler_weight": "rescaler weight", "p_given": "p(given label) (cartography)", "margin": "margin (AUM)"}
WEIGHT_COLUMNS = ["rescaler_weight", "label_score", "cleanlab_score", "aum", "cartography_confidence",
                  "multiannotator_score"]


@st.cache_data(ttl=600, show_spinner=False, max_entries=8)
def _scores(db: str, run_id: int) -> pd.DataFrame:
    return load_scores(Store(db), run_id)


def run_panel(store: Store, dataset: str) -> None:
    sources = label_sources(store, dataset)
    with st.expander("Run the noise methods", expanded=noise_runs(store, dataset).empty):
        c1, c2 = st.columns([1, 2])
        picked = c1.selectbox("Label column", sources + ["other…"], key="noise_source",
                              help="a metadata field, votes:F1,F2,.. (crowd vote counts), annotators:LIST, "
                                   "labels:SCHEMA/FIELD (hand-label consensus)")
        source = c1.text_input("Label source", key="noise_source_text") if picked == "other…" else picked
        several = bool(source) and _has_annotators(source)
        default = [*DEFAULT_METHODS, "multiannotator"] if several else list(DEFAULT_METHODS)
        options = list(METHODS) if several else [m for m in METHODS if m != "multiannotator"]
        methods = c2.multiselect("Methods", options, default=default, key=f"noise_methods_{several}")
        s1, s2, s3 = c2.columns(3)
        epochs = s1.number_input("Epochs (cartography, AUM)", 2, 100, NoiseConfig.epochs, key="noise_epochs")
        r_epochs = s2.number_input("Rescaler epochs", 2, 50, NoiseConfig.rescaler_epochs, key="noise_r_epochs")
        hidden = s3.number_input("Hidden units (0 = linear)", 0, 2048, NoiseConfig.hidden, key="noise_hidden")
        st.caption(noise_job_plan(store, dataset, methods))
        busy = ui_jobs.running("noise_job")
        if st.button("Find noisy labels", type="primary", key="noise_run_button",
                     disabled=busy or not (source and methods)):
            cfg = NoiseConfig(epochs=int(epochs), rescaler_epochs=int(r_epochs), hidden=int(hidden))

            def work(job: Job) -> pd.DataFrame:
                return run_noise(store, dataset, source, methods, config=cfg, progress=job.report)

            ui_jobs.start("noise_job", "noise", f"Noise methods on {dataset}", work, str(store.path))
        ui_jobs.follow("noise_job", on_done=_noise_done)
    if message := st.session_state.pop("noise_last_message", None):
        st.success(md_text(message))


def _noise_done(job: Job) -> None:
    table = job.result
    st.session_state["noise_run_id"] = int(table.attrs["run_id"])
    st.session_state["noise_last_message"] = (
        f"Run {table.attrs['run_id']}: {table.attrs['summary']['n_label_issues']} samples flagged by at least "
        "half the methods")


def noise_job_plan(store: Store, dataset: str, methods: list[str]) -> str:
    """What the button will compute, what is cached, and about how long it takes."""
    plan = embedding_plan(store, dataset, text="instruction")
    rate = run_rate(store, "noise")
    fit = (f"then {len(methods)} method(s), about {describe_seconds(plan.n_samples / rate[0])} at this store's "
           f"measured rate" if rate else f"then {len(methods)} method(s) (no earlier noise run to time them by)")
    return f"{plan.describe(DEFAULT_MODEL)} {fit}."


def _has_annotators(source: str) -> bool:
    try:
        return parse_label_source(source).has_annotators
    except ValueError:
        return False


def pick_run(store: Store, dataset: str) -> int | None:
    runs = noise_runs(store, dataset)
    if runs.empty:
        st.info("No noise run on this dataset yet: pick a label column and methods above, then run.")
        return None
    labels = {int(r.run_id): f"run {r.run_id}: {r.label_source} · {', '.join(r.methods)} · {r.n_samples:,} samples"
              for r in runs.itertuples()}
    wanted = st.session_state.get("noise_run_id")
    ids = list(labels)
    index = ids.index(wanted) if wanted in ids else 0
    return st.selectbox("Noise run", ids, index=index, format_func=labels.get, key="noise_run_pick")


def summary_row(info: dict, scores: pd.DataFrame) -> None:
    summary = info["summary"]
    cols = st.columns(2 + len(summary.get("flagged", {})))
    cols[0].metric("samples", f"{len(scores):,}")
    cols[1].metric("flagged by ≥ half the methods", f"{summary.get('n_label_issues', 0):,}")
    for col, (method, n) in zip(cols[2:], summary.get("flagged", {}).items(), strict=True):
        col.metric(f"{method} flags", f"{n:,}")
    other = summary.get("other_issues") or {}
    if other:
        st.caption("cleanlab also found: " + ", ".join(f"{k.replace('_flag', '')}: {v}" for k, v in other.items()))


def suspicious_tab(store: Store, run_id: int, info: dict) -> None:
    min_flags = st.slider("At least this many methods flag it", 0, len(info["methods"]), 1, key="noise_min_flags")
    top = suspicious(store, run_id, limit=500, min_flags=min_flags)
    if top.empty:
        st.info("No sample is flagged that many times.")
        return
    shown = [c for c in ["sample_id", "given_label", "predicted_label", "n_flags", "label_score", "cleanlab_score",
                         "aum", "cartography_confidence", "cartography_region", "rescaler_weight",
                         "multiannotator_score", "consensus_label", "text"] if c in top]
    event = st.dataframe(top[shown], hide_index=True, on_select="rerun", selection_mode="multi-row",
                         key="noise_table", height=320)
    rows = list(event.selection.rows) if event and event.selection else []
    chosen = top.iloc[rows]["sample_id"].tolist() if rows else []
    ids = top["sample_id"].tolist()
    sample_id = st.selectbox("Inspect sample", ids, index=ids.index(chosen[0]) if chosen else 0, key="noise_sample")
    detail(store, run_id, info, top.set_index("sample_id").loc[sample_id], int(sample_id))
    st.subheader("Act on a set")
    targets = chosen or [int(sample_id)]
    a1, a2 = st.columns(2)
    who = st.session_state.get("noise_annotator", "")
    if a1.button(f"Exclude {len(targets)} selected from mixtures", key="noise_exclude"):
        n = actions.exclude_noisy(store, targets, who=who)
        st.success(f"Excluded {n} samples (reason: {actions.EXCLUDE_REASON}).")
    if a2.button(f"Send all {len(top)} listed to the labelling queue", key="noise_queue"):
        sid = actions.send_to_queue(store, run_id, ids, who=who)
        st.success(f"Saved selection {sid} with {len(ids)} samples; pick it as the queue on the Label page.")


def detail(store: Store, run_id: int, info: dict, row: pd.Series, sample_id: int) -> None:
    st.subheader(f"Sample {sample_id}")
    st.text(f"given: {row['given_label']}    predicted: {row.get('predicted_label', '?')}    "
            f"flags: {row['n_flags']}")
    text = store.query_df("SELECT text FROM samples WHERE id = ?", [sample_id]).text
    st.text(text.iloc[0] if len(text) else "")
    st.caption("Nearest neighbours and their labels (evidence)")
    try:
        st.dataframe(neighbour_evidence(store, run_id, sample_id, k=5), hide_index=True)
    except (KeyError, ValueError) as exc:
        st.info(md_text(f"No neighbours: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}"))
    c1, c2, c3 = st.columns([1, 1, 1])
    annotator = c1.text_input("Your name", key="noise_annotator")
    classes = info["classes"]
    given = str(row["given_label"])
    new = c2.selectbox("Correct label", classes, index=classes.index(given) if given in classes else 0,
                       key=f"noise_new_label_{sample_id}")
    if c3.button("Relabel", key="noise_relabel", disabled=not annotator.strip()):
        event_id = actions.relabel(store, run_id, sample_id, new, annotator=annotator)
        success(f"Recorded label {new!r} for sample {sample_id} (event {event_id}); a rerun uses it.")


def charts(store: Store, run_id: int, info: dict, scores: pd.DataFrame) -> None:
    tabs = st.tabs(["Weights", "Cartography", "Trajectories", "Confusion", "Annotators"])
    with tabs[0]:
        cols = [c for c in WEIGHT_COLUMNS if c in scores]
        column = st.selectbox("Per-class distribution of", cols, key="noise_weight_col")
        st.plotly_chart(weight_distribution(scores, column), key="noise_weights_chart")
    with tabs[1]:
        if "cartography_confidence" in scores:
            colours = ["cartography_region"] + [c for c in scores if c.endswith("_flag") or c == "is_label_issue"]
            colour = st.selectbox("Colour by", colours, key="noise_carto_colour")
            st.plotly_chart(cartography_map(scores, colour), key="noise_carto_chart")
        else:
            st.info("This run has no cartography.")
    with tabs[2]:
        trajectory_panel(store, run_id, scores)
    with tabs[3]:
        if "predicted_label" in scores:
            st.plotly_chart(confusion_figure(confusion(store, run_id)), key="noise_confusion_chart")
    with tabs[4]:
        ann = annotator_quality(store, run_id)
        if ann.empty:
            st.info("Annotator quality needs a votes: or annotators: label source and the multiannotator method.")
        else:
            st.dataframe(ann, hide_index=True)


def trajectory_panel(store: Store, run_id: int, scores: pd.DataFrame) -> None:
    series = [s for s in SERIES if store.query_df(
        "SELECT 1 FROM noise_trajectories WHERE run_id = ? AND series = ? LIMIT 1", [run_id, s]).shape[0]]
    if not series:
        st.info("This run recorded no training trajectories.")
        return
    name = st.selectbox("Series", series, format_func=SERIES.get, key="noise_series")
    ranked = scores.sort_values("label_score")
    default = ranked.index[:4].tolist() + ranked.index[-2:].tolist()  # the most suspicious and two clean ones
    picked = st.multiselect("Samples", ranked.index.tolist()[:2000], default=default, key="noise_traj_ids")
    long = trajectories(store, run_id, picked, name)
    st.plotly_chart(weight_trajectories(long, series=name, labels=scores["given_label"].to_dict()),
                    key="noise_traj_chart")


def main() -> None:
    st.set_page_config(page_title="Assay · Noise", layout="wide")
    st.title("Noisy labels")
    store, names = open_store()
    dataset = st.selectbox("Dataset", names, key="noise_dataset")
    run_panel(store, dataset)
    run_id = pick_run(store, dataset)
    if run_id is None:
        return
    info = run_info(store, run_id)
    scores = _scores(str(store.path), run_id)
    summary_row(info, scores)
    charts(store, run_id, info, scores)
    st.header("Suspicious samples")
    suspicious_tab(store, run_id, info)


run_page(main)
