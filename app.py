"""Assay home page: the store, its datasets, recent runs, and loading data."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

import ui_jobs
from core.browse.display import computed_kinds, plural, table
from core.maps.embed import fallback_note
from core.store.database import Store, StoreError, default_db_path
from ui import error, guard, md_text, success

UPLOAD_TYPES = ["jsonl", "ndjson", "json", "parquet", "csv", "txt", "gz", "zst"]
ON_BAD = {"refuse the whole load": "error", "skip bad records and report them": "skip"}


def _choices(module: str, attribute: str, fallback: tuple[str, ...]) -> list[str]:
    try:
        return list(getattr(__import__(f"core.{module}", fromlist=[attribute]), attribute))
    except (ImportError, AttributeError):
        return list(fallback)


def datasets_table(store: Store) -> None:
    frame = store.datasets()
    shown = pd.DataFrame({
        "dataset": frame["name"],
        "samples": frame["n_samples"],
        "licence": frame["license"].fillna("unknown"),
        "synthetic": frame["synthetic"],
        "eval set": frame["is_eval"],
        "shape": frame["shape"],
        "loaded": frame["loaded_at"],
        "computed": frame["computed"].map(computed_kinds),
    })
    # Selecting a row opens that dataset in this tab (a link column would open a new tab every time).
    event = st.dataframe(
        **table(shown, {"loaded": st.column_config.DatetimeColumn("loaded", format="YYYY-MM-DD HH:mm")}),
        hide_index=True, width="stretch", key="home_datasets", on_select="rerun", selection_mode="single-row",
    )
    if event.selection.rows:
        name = str(shown["dataset"].iloc[event.selection.rows[0]])
        st.switch_page(DATASETS_PAGE, query_params={"dataset": name})
    st.caption("Select a row to browse that dataset.")


# Kinds whose interrupted run picks up where it stopped when the same command runs again.
RESUMABLE = ("embed", "tag", "scale-")


def _run_note(kind: str, interrupted: bool, status: str = "") -> str:
    if status == "cancelled":
        return "cancelled; can resume: start it again" if kind.startswith(RESUMABLE) else "cancelled"
    if not interrupted:
        return ""
    if kind.startswith(RESUMABLE):
        return "its process is gone; can resume: rerun the same command"
    return "its process is gone; run it again to redo it"


def recent_runs(store: Store) -> None:
    runs = store.runs()
    if runs.empty:
        st.caption("No runs yet.")
        return
    runs = runs.assign(status=runs["state"],  # 'interrupted' where the process of a 'running' run is gone
                       note=[_run_note(k, i, s) for k, i, s in zip(runs["kind"], runs["interrupted"], runs["status"],
                                                                  strict=True)])
    # params: what the run was started with (frozen); metrics: what it measured on the way. An embed run
    # where the default ONNX path failed says so in its note, with the reason (core/maps/embed.py).
    runs["note"] = ["; ".join(filter(None, (n, fallback_note(k, m)))) for n, k, m in
                    zip(runs["note"], runs["kind"], runs["metrics"], strict=True)]
    cols = ["run_id", "kind", "dataset", "status", "note", "model", "started_at", "finished_at", "n_samples", "error",
            "params", "metrics"]
    st.dataframe(**table(runs.sort_values("run_id", ascending=False).head(20)[cols]), hide_index=True, width="stretch")


def upload_file_name(name: str) -> str:
    """A safe local name for an uploaded file: never the user's text (it may be a path or 10,000
    characters), only its recognised extensions, so that format detection still sees them."""
    suffixes = [s.lower() for s in Path(name).suffixes[-2:]]
    kept = [s for s in suffixes if s.lstrip(".") in UPLOAD_TYPES + ["tsv", "txt"]]
    return "upload" + "".join(kept)


def save_upload(upload) -> Path:
    """Write the upload to a temporary file named from its extensions (format detection reads them)."""
    folder = Path(tempfile.mkdtemp(prefix="assay-upload-"))
    path = folder / upload_file_name(upload.name)
    path.write_bytes(upload.getbuffer())
    return path


def parse_mapping(text: str) -> dict[str, str] | None:
    """'text=tweet, prompt=question' -> {'text': 'tweet', 'prompt': 'question'}."""
    pairs = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    mapping = {}
    for pair in pairs:
        key, sep, column = pair.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise ValueError(f"Column mapping {pair!r}: expected KEY=COLUMN, e.g. text=tweet")
        mapping[key.strip()] = column.strip()
    return mapping or None


def upload_form(store: Store) -> None:
    from core.ingest.importer import ingest  # imported here so that the page still draws if ingest is broken

    with st.form("upload", clear_on_submit=False):
        upload = st.file_uploader("Dataset file (JSONL, JSON, Parquet, CSV; .gz or .zst compressed)",
                                  type=UPLOAD_TYPES)
        left, right = st.columns(2)
        name = left.text_input("Name", help="defaults to the file name")
        license_ = right.text_input("Licence", placeholder="e.g. MIT, Apache-2.0, CC BY-NC 4.0")
        fmt = left.selectbox("Format", ["auto"] + _choices("readers", "FORMATS", ("jsonl", "json", "parquet", "csv")))
        shape = right.selectbox("Record shape", ["auto"] + _choices("shapes", "SHAPES", ()))
        mapping_text = st.text_input(
            "Column mapping (optional)", placeholder="e.g. text=tweet  or  prompt=question, response=answer",
            help="For records of no known shape: which column holds which part (sets the shape to 'mapped').")
        synthetic = left.checkbox("Synthetic (model-generated) data")
        is_eval = right.checkbox("Evaluation benchmark (not training data)")
        on_bad = st.radio("On bad records", list(ON_BAD), horizontal=True)
        submitted = st.form_submit_button("Load")
    if not submitted:
        return
    if upload is None:
        st.error("Choose a file to load first.")
        return
    dataset_name = name.strip() or Path(upload.name).name.split(".")[0]
    try:
        mapping = parse_mapping(mapping_text)
    except ValueError as exc:
        error(exc)
        return
    path = save_upload(upload)
    bar = st.progress(0.0, text=f"Loading {md_text(upload.name)} …")

    def progress(done: int, total: int | None) -> None:
        fraction = min(done / total, 1.0) if total else 0.0
        bar.progress(fraction, text=f"Loading {md_text(upload.name)}: {done:,} records read")

    try:
        report = ingest(
            store, path, name=dataset_name, format=None if fmt == "auto" else fmt,
            shape=None if shape == "auto" else shape, mapping=mapping, license=license_.strip() or None, synthetic=synthetic,
            is_eval=is_eval, on_bad=ON_BAD[on_bad], progress=progress,
        )
    except (ValueError, KeyError, OSError, StoreError) as exc:
        # Shown at the top of the page after the rerun: the form may sit in a collapsed expander.
        # Name the user's file, not our temporary copy of it.
        shown = str(exc).replace(str(path), upload.name[:200]).replace(path.name, upload.name[:200])
        st.session_state["load_error"] = f"Nothing was loaded: {shown}"
        st.rerun()
    finally:
        path.unlink(missing_ok=True)
        path.parent.rmdir()
    # Rerun so that the datasets table shows the new dataset; the report survives in the session.
    st.session_state["load_report"] = report
    st.rerun()


def last_load_report() -> None:
    error_text = st.session_state.pop("load_error", None)
    if error_text:
        error(error_text)
    report = st.session_state.pop("load_report", None)
    if report is None:
        return
    success(f"Loaded {plural(report.n_samples, 'sample')} into dataset {report.dataset!r} "
               f"(shape {report.shape}, {report.n_skipped:,} records skipped).")
    if report.not_used or report.warnings:
        st.warning("Some source fields were not used: they are kept in the raw record only (see below).")
    if report.fields:  # where each source field went; field names are data, so plain text only
        st.text("Source fields\n" + report.summary())
    if report.skipped:
        st.dataframe(**table(pd.DataFrame(report.skipped)), hide_index=True)


def how_to_load(store: Store) -> None:
    from core.ingest.demo import demo_source, shared_datasets_dir

    if "demo_source" not in st.session_state:  # asked once per session: the hub check may wait seconds
        st.session_state["demo_source"] = demo_source()
    source = st.session_state["demo_source"]
    if source == "none":
        st.info(f"There is no demo data here ({shared_datasets_dir()} is absent and the Hugging Face hub cannot be "
                "reached), so load a file of your own: from a terminal or with the form below.")
        st.text(f"assay --db {store.path} ingest PATH --name NAME [--license L] [--synthetic]")
        return
    st.info("This store is empty. Load data in one of three ways:")
    demo = ("the demo datasets (from ../shared/datasets): run  make run  from the project folder" if source == "folder"
            else "the demo datasets from the Hugging Face hub: the button below, or  make run  from the project folder")
    st.text(
        f"1. {demo[0].upper()}{demo[1:]}.\n"
        f"2. From a terminal:  assay --db {store.path} ingest PATH --name NAME [--license L] [--synthetic]\n"
        "3. Upload a file with the form below."
    )
    if source == "hub" and st.button("Load the demo datasets from the Hugging Face hub", key="demo_from_hub"):
        demo_from_hub(store)


def demo_from_hub(store: Store) -> None:
    from core.ingest.demo import load_demo_from_hub

    bar = st.progress(0.0, text="Loading the demo datasets from the Hugging Face hub …")
    try:
        reports = load_demo_from_hub(store, progress=lambda f, what: bar.progress(min(max(f, 0.0), 1.0), text=what))
    except Exception as exc:  # noqa: BLE001 - a network or hub failure: say it in a sentence, keep the page
        st.error(f"Could not load the demo from the hub: {exc}")
        return
    bar.progress(1.0, text=f"Loaded {len(reports)} demo datasets from the Hugging Face hub")
    st.rerun()  # the datasets table replaces this message


def home() -> None:
    st.title("Assay")
    st.caption("A workbench for curating LLM training data.")
    store = Store(default_db_path())
    try:
        names = store.dataset_names()
        version = store.schema_version()
    except StoreError as exc:
        error(exc)
        return
    st.text(f"Store: {store.path}  (schema version {version})")
    last_load_report()
    if not names:
        how_to_load(store)
        st.subheader("Upload a dataset")
        upload_form(store)
        return
    st.subheader(f"Datasets ({len(names)})")
    datasets_table(store)
    st.page_link(DATASETS_PAGE, label="Browse a dataset", icon=":material/table_view:")
    with st.expander("Load another dataset"):
        upload_form(store)
    st.subheader("Jobs")
    ui_jobs.jobs_table(str(store.path))
    st.subheader("Recent runs")
    recent_runs(store)


# The pages, in the sidebar's order. Declared here (rather than found in pages/) so that the home page is
# called "Home", not "app"; url paths stay the ones links and bookmarks use (/Datasets?dataset=NAME).
DATASETS_PAGE = st.Page("pages/1_Datasets.py", title="Datasets", icon=":material/table_view:", url_path="Datasets")
PAGES = [
    st.Page(home, title="Home", icon=":material/home:", default=True),
    DATASETS_PAGE,
    st.Page("pages/2_Map.py", title="Map", icon=":material/scatter_plot:", url_path="Map"),
    st.Page("pages/3_Tags.py", title="Tags", icon=":material/sell:", url_path="Tags"),
    st.Page("pages/4_Label.py", title="Label", icon=":material/edit_note:", url_path="Label"),
    st.Page("pages/5_Noise.py", title="Noise", icon=":material/troubleshoot:", url_path="Noise"),
    st.Page("pages/6_Duplicates.py", title="Duplicates", icon=":material/content_copy:", url_path="Duplicates"),
    st.Page("pages/7_Contamination.py", title="Contamination", icon=":material/science:", url_path="Contamination"),
    st.Page("pages/8_Mixture.py", title="Mixture", icon=":material/blender:", url_path="Mixture"),
]

st.set_page_config(page_title="Assay", layout="wide")
with guard():  # every page: a sentence for what the user can fix, a log reference for a bug
    _page = st.navigation(PAGES)
    ui_jobs.sidebar(str(Store(default_db_path()).path))  # running jobs, on every page
    _page.run()
