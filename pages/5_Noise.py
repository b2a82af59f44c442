"""Noise: find probably-mislabelled samples, see how a reweighting method would down-weight them, fix them.

Thin page: every computation and write goes through core.noise (run, actions) and the figures come from
core.noise.figures. Dataset text and labels are shown with st.text / st.dataframe, never as markdown.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui_jobs
from core.browse.samples import sample_text
from core.maps.embed import DEFAULT_MODEL
from core.maps.estimates import describe_seconds, embedding_plan, run_rate
from core.noise import actions
from core.noise.features import default_label_source, label_sources, parse_label_source
from core.noise.figures import cartography_map, confusion_figure, weight_distribution, weight_trajectories
from core.noise.label_names import display, label_names, set_label_names, with_names
from core.noise.run import (
    DEFAULT_METHODS,
    METHODS,
    NoiseConfig,
    annotator_quality,
    confusion,
    flagged_ids,
    load_scores,
    neighbour_evidence,
    noise_runs,
    recorded_series,
    run_info,
    run_noise,
    suspicious,
    trajectories,
)
from core.store.database import Store
from core.store.jobs import Job
from ui import md_text, open_store, run_page, success

SERIES = {"rescaler_weight": "rescaler weight", "p_given": "p(given label) (cartography)", "margin": "margin (AUM)"}
RESCALER_METHOD = {
    "storm": "STORM as Heck et al. 2025 (arXiv 2412.12955) define it: validation batches drawn from the training "
             "data with the rescaler's own weights, meta loss rescaled by the rescaler with its gradient kept.",
    "detached-cubed": "this project's earlier tuning, not the paper's method: uniform validation draw, the "
                      "rescaler's weights detached and cubed.",
}
WEIGHT_COLUMNS = ["rescaler_weight", "label_score", "cleanlab_score", "aum", "cartography_confidence",
                  "multiannotator_score"]


@st.cache_data(ttl=600, show_spinner=False, max_entries=8)
def _scores(db: str, run_id: int) -> pd.DataFrame:
    return load_scores(Store(db), run_id)


def run_panel(store: Store, dataset: str) -> None:
    sources = label_sources(store, dataset)
    default = default_label_source(store, dataset, sources)
    with st.expander("Run the noise methods", expanded=noise_runs(store, dataset).empty):
        c1, c2 = st.columns([1, 2])
        picked = c1.selectbox("Label column", sources + ["other…"], key=f"noise_source_{dataset}",
                              index=sources.index(default) if default in sources else 0,
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
        variant = c2.selectbox("Rescaler variant", list(RESCALER_METHOD), key="noise_rescaler_variant",
                               help=" · ".join(f"{k}: {v}" for k, v in RESCALER_METHOD.items()),
                               disabled="rescaler" not in methods)
        st.caption(noise_job_plan(store, dataset, methods))
        busy = ui_jobs.running("noise_job")
        if st.button("Find noisy labels", type="primary", key="noise_run_button",
                     disabled=busy or not (source and methods)):
            cfg = NoiseConfig(epochs=int(epochs), rescaler_epochs=int(r_epochs), hidden=int(hidden),
                              rescaler_variant=variant)

            def work(job: Job) -> pd.DataFrame:
                return run_noise(store, dataset, source, methods, config=cfg, progress=job.report)

            ui_jobs.start("noise_job", "noise", f"Noise methods on {dataset}", work, str(store.path))
        ui_jobs.follow("noise_job", on_done=_noise_done)
    ui_jobs.show_announcement("noise_job")


def _noise_done(job: Job) -> None:
    table = job.result
    st.session_state["noise_run_id"] = int(table.attrs["run_id"])
    # The picker below keeps its own state once shown (its index is then ignored): point it at the new run.
    st.session_state["noise_run_pick"] = int(table.attrs["run_id"])
    ui_jobs.announce("noise_job", f"Run {table.attrs['run_id']}: {table.attrs['summary']['n_label_issues']} "
                     "samples flagged by at least half the methods")


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
    if "rescaler" in info["methods"]:
        # Runs made before the variants were named used what is now "detached-cubed".
        variant = summary.get("rescaler_variant", "detached-cubed")
        st.caption(f"rescaler: meta loss rescaling, variant {variant}: " + RESCALER_METHOD.get(variant, ""))
    other = summary.get("other_issues") or {}
    if other:
        st.caption("cleanlab also found: " + ", ".join(f"{k.replace('_flag', '')}: {v}" for k, v in other.items()))


def suspicious_tab(store: Store, run_id: int, info: dict, names: dict[str, str]) -> None:
    n_methods = len(info["methods"])
    c1, c2 = st.columns(2)
    if n_methods > 1:
        min_flags = c1.slider("At least this many methods flag it", 1, n_methods, 1, key="noise_min_flags")
    else:  # one method: a sample is flagged or not, nothing to choose
        min_flags = 1
        c1.caption(f"Samples flagged by {info['methods'][0]}.")
    limit = int(c2.number_input("List the most suspicious", 10, 5000, 500, step=50, key="noise_list_limit"))
    flagged = flagged_ids(store, run_id, min_flags=min_flags)
    top = suspicious(store, run_id, limit=limit, min_flags=min_flags)
    if top.empty:
        st.info("No sample is flagged that many times.")
        return
    st.caption(f"{len(flagged):,} samples flagged by at least {min_flags} method(s); the {len(top):,} most "
               "suspicious are listed.")
    shown = [c for c in ["sample_id", "given_label", "predicted_label", "n_flags", "label_score", "cleanlab_score",
                         "aum", "cartography_confidence", "cartography_region", "rescaler_weight",
                         "multiannotator_score", "consensus_label", "text"] if c in top]
    event = st.dataframe(with_names(top[shown], names), hide_index=True, on_select="rerun", selection_mode="multi-row",
                         key="noise_table", height=320)
    rows = list(event.selection.rows) if event and event.selection else []
    chosen = top.iloc[rows]["sample_id"].tolist() if rows else []
    ids = top["sample_id"].tolist()
    sample_id = st.selectbox("Inspect sample", ids, index=ids.index(chosen[0]) if chosen else 0, key="noise_sample")
    detail(store, run_id, info, top.set_index("sample_id").loc[sample_id], int(sample_id), names)
    st.subheader("Act on a set")
    targets = chosen or [int(sample_id)]
    a1, a2 = st.columns(2)
    who = st.session_state.get("noise_annotator", "")
    if a1.button(f"Exclude {len(targets)} selected from mixtures", key="noise_exclude"):
        n = actions.exclude_noisy(store, targets, who=who)
        st.success(f"Excluded {n} samples (reason: {actions.EXCLUDE_REASON}).")
    if a2.button(f"Send all {len(flagged):,} flagged to the labelling queue", key="noise_queue"):
        sid = actions.send_to_queue(store, run_id, flagged, who=who)
        st.success(f"Saved selection {sid} with {len(flagged):,} samples; pick it as the queue on the Label page.")


def detail(store: Store, run_id: int, info: dict, row: pd.Series, sample_id: int, names: dict[str, str]) -> None:
    st.subheader(f"Sample {sample_id}")
    st.text(f"given: {display(row['given_label'], names)}    "
            f"predicted: {display(row.get('predicted_label', '?'), names)}    flags: {row['n_flags']}")
    st.text(sample_text(store, sample_id) or "")
    st.caption("Nearest neighbours and their labels (evidence)")
    try:
        st.dataframe(with_names(neighbour_evidence(store, run_id, sample_id, k=5), names), hide_index=True)
    except (KeyError, ValueError) as exc:
        st.info(md_text(f"No neighbours: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}"))
    c1, c2, c3 = st.columns([1, 1, 1])
    annotator = c1.text_input("Your name", key="noise_annotator")
    classes = info["classes"]
    given = str(row["given_label"])
    new = c2.selectbox("Correct label", classes, index=classes.index(given) if given in classes else 0,
                       format_func=lambda c: display(c, names), key=f"noise_new_label_{sample_id}")
    if c3.button("Relabel", key="noise_relabel", disabled=not annotator.strip()):
        event_id = actions.relabel(store, run_id, sample_id, new, annotator=annotator)
        success(f"Recorded label {display(new, names)!r} for sample {sample_id} (event {event_id}); "
                "a rerun uses it.")


def names_panel(store: Store, dataset: str, info: dict, names: dict[str, str]) -> None:
    """Names for the label's values, kept with the dataset (core.noise.label_names) and shown everywhere here."""
    classes = info["classes"]
    with st.expander(f"Names of the classes of {info['label_source']}", expanded=False):
        if len(classes) > 30:
            st.caption(f"{len(classes)} classes: name them in a notebook with core.noise.label_names.set_label_names.")
            return
        cols = st.columns(min(len(classes), 4))
        typed = {}
        for i, c in enumerate(classes):  # the value as plain text: a widget label would render markdown
            cols[i % len(cols)].text(f"value {c}")
            typed[c] = cols[i % len(cols)].text_input("name", names.get(c, ""), key=f"noise_name_{dataset}_{c}",
                                                      label_visibility="collapsed")
        if st.button("Save names", key="noise_save_names"):
            set_label_names(store, dataset, info["label_source"], {**names, **typed})
            st.rerun()  # every view on the page reads the names at the top of the script


def charts(store: Store, run_id: int, info: dict, scores: pd.DataFrame, names: dict[str, str]) -> None:
    tabs = st.tabs(["Weights", "Cartography", "Trajectories", "Confusion", "Annotators"])
    scores = with_names(scores, names)
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
            st.plotly_chart(confusion_figure(confusion(store, run_id), names), key="noise_confusion_chart")
    with tabs[4]:
        ann = annotator_quality(store, run_id)
        if ann.empty:
            st.info("Annotator quality needs a votes: or annotators: label source and the multiannotator method.")
        else:
            st.dataframe(with_names(ann, names), hide_index=True)


def trajectory_panel(store: Store, run_id: int, scores: pd.DataFrame) -> None:
    recorded = recorded_series(store, run_id)
    series = [s for s in SERIES if s in recorded]
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
    names = label_names(store, dataset, info["label_source"])
    summary_row(info, scores)
    names_panel(store, dataset, info, names)
    charts(store, run_id, info, scores, names)
    st.header("Suspicious samples")
    suspicious_tab(store, run_id, info, names)


run_page(main)
