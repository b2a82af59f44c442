"""Label: hand-label samples one at a time (focus) or a page at a time (bulk), see agreement, adjudicate.

Thin page: every read and write goes through core.labels.labelling / core.labels.agreement. Dataset text is shown with
st.text (never markdown); the guidelines are the user's own markdown. Keyboard: number keys pick,
Enter submits, arrows move, S skips, U or Ctrl+Z undoes (Streamlit's own button shortcuts, plus a tiny
listener for Ctrl+Z that ignores keys typed into text fields).
"""

from __future__ import annotations

import uuid
from typing import Any

import pandas as pd
import streamlit as st
import streamlit.components.v1 as components

import core.labels.agreement as A
import core.labels.labelling as L
import core.maps.neighbours as N
from core import safe_yaml
from core.browse.display import column_labels, plural, table
from core.browse.samples import get_sample, matching_ids
from core.browse.selections import list_selections, selection_ids
from core.maps.embed import embedding_runs
from core.store.database import Store
from ui import error, md_text, run_page, success

st.set_page_config(page_title="Label · Assay", layout="wide")
store = Store()
ss = st.session_state
ss.setdefault("label_session", uuid.uuid4().hex[:12])

CTRL_Z = """<script>
const doc = window.parent.document;
if (!doc.assayUndoKey) {
  doc.assayUndoKey = true;
  doc.addEventListener("keydown", (e) => {
    if (e.key.toLowerCase() !== "z" || !(e.ctrlKey || e.metaKey) || e.shiftKey) return;
    const t = e.target;
    if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) return;
    const b = [...doc.querySelectorAll("button")].find((x) => x.innerText.trim().startsWith("Undo"));
    if (b) { e.preventDefault(); b.click(); }
  }, true);
}
</script>"""


# ---- who is labelling ----------------------------------------------------------------------------


def _logged_in_name() -> str | None:
    try:
        if st.user.is_logged_in:
            return str(st.user.get("email") or st.user.get("name") or "") or None
    except Exception:  # noqa: BLE001 - no identity provider configured
        return None
    return None


def annotator() -> str:
    name = _logged_in_name() or ss.get("annotator")
    if name:
        return name
    st.title("Label")
    with st.form("who"):
        typed = st.text_input("Your name, recorded with every label you make", key="annotator_input")
        if st.form_submit_button("Start labelling", type="primary"):
            if typed.strip():
                ss["annotator"] = typed.strip()
                st.rerun()
            st.error("Type your name first: every label you make is recorded with it.")
    st.stop()


# ---- schemas -------------------------------------------------------------------------------------


def schema_editor() -> None:
    st.subheader("New label schema")
    how = st.radio("Define it", ["Form", "YAML"], horizontal=True, key="schema_how")
    if how == "YAML":
        text = st.text_area("Schema YAML", height=260, key="schema_yaml",
                            placeholder="name: task\nfields:\n  - name: category\n    vocabulary: magpie_task_category")
        spec = None
        if text.strip():
            try:
                spec = safe_yaml.load(text)  # no aliases, bounded size: the editor runs in the shared server
            except safe_yaml.YamlError as exc:
                error(str(exc))
    else:
        name = st.text_input("Name", key="schema_name")
        ftype = st.selectbox("Type", L.FIELD_TYPES, key="schema_type")
        vocab = st.selectbox("Reuse a vocabulary", ["(none)", *L.VOCABULARIES], key="schema_vocab")
        options = st.text_area("Options, one per line (choice types)", key="schema_options")
        guidelines = st.text_area("Guidelines (markdown)", key="schema_guidelines")
        spec = {"name": name, "guidelines": guidelines, "fields": [{
            "name": "label", "type": ftype, "vocabulary": None if vocab == "(none)" else vocab,
            "options": [o.strip() for o in options.splitlines() if o.strip()]}]} if name else None
    if st.button("Save schema", type="primary", disabled=spec is None, key="schema_save"):
        try:
            saved = L.save_schema(store, L.parse_schema(spec), created_by=ss.get("annotator", ""))
        except L.LabelError as exc:
            error(exc)
            return
        # Applied before the widgets are drawn on the rerun: the selector then lists the new schema, selected.
        ss["label_pending"] = {"view": "Focus", "schema_pick": saved.name}
        ss["flash"] = ("success", f"Saved schema {saved.name} (version {saved.version}); labelling with it now.")
        st.rerun()


# ---- the queue -----------------------------------------------------------------------------------


def queue_source(schema: L.LabelSchema) -> tuple[tuple, list[int]] | None:
    """Sidebar controls for where samples come from; returns (cache key, candidate ids)."""
    kinds = ["Dataset filter", "Saved selection", "Most uncertain first", "Nearest neighbours"]
    kind = st.sidebar.radio("Queue from", kinds, key="queue_kind")
    if kind == "Saved selection":
        sels = list_selections(store)
        if sels.empty:
            st.sidebar.info("No saved selections yet: save one from the map or the browser.")
            return None
        pick = st.sidebar.selectbox("Selection", sels["name"].tolist(), key="queue_selection")
        return (kind, pick), selection_ids(store, pick)
    names = store.dataset_names()
    if not names:
        st.info("No datasets in the store yet: load one on the Datasets page or with `assay ingest`.")
        return None
    dataset = st.sidebar.selectbox("Dataset", names, key="queue_dataset")
    if kind == "Nearest neighbours":
        return neighbours_source(dataset)
    search = st.sidebar.text_input("Search text", key="queue_search")
    lines = st.sidebar.text_area("Signal filters, one per line (NAME:OP[:VALUE], e.g. tag.category:eq:Math, "
                                 "noise.cleanlab.flag:is_true)", key="queue_filters", height=68)
    filters = tuple(line.strip() for line in lines.splitlines() if line.strip())
    try:
        ids = L.signal_candidates(store, dataset, filters, search=search or None) if filters else \
            matching_ids(store, dataset, search=search or None)
    except ValueError as exc:
        st.sidebar.warning(md_text(str(exc)))
        return None
    if kind == "Most uncertain first":
        by = st.sidebar.selectbox("Uncertainty from", ["tagger confidence / noise flags"]
                                  + L.numeric_signals(store, dataset), key="queue_order",
                                  help="a numeric signal orders the queue lowest first")
        signal = None if by == "tagger confidence / noise flags" else by
        ordered = L.most_uncertain_first(store, schema, ids, signal=signal)
        if not ordered:
            st.sidebar.info("No tagger confidence or noise flags yet for these samples: showing dataset order.")
        return (kind, dataset, search, filters, signal), ordered or ids
    return (kind, dataset, search, filters), ids


def neighbours_source(dataset: str) -> tuple[tuple, list[int]] | None:
    runs = embedding_runs(store)
    if runs.empty:
        st.sidebar.info("No embedding runs yet: embed a dataset on the Map page first.")
        return None
    run = st.sidebar.selectbox("Embedding run", runs["run_id"].tolist(), key="queue_nn_run")
    sid = int(st.sidebar.number_input("Neighbours of sample id", min_value=0, step=1, key="queue_nn"))
    k = int(st.sidebar.number_input("How many", 5, 1000, 50, key="queue_nn_k"))
    try:
        found = N.neighbours(store, int(run), sid, k=k)
    except KeyError as exc:
        st.sidebar.warning(md_text(exc.args[0]))
        return None
    return ("neighbours", dataset, run, sid, k), [sid, *[int(i) for i in found["id"]]]


def ensure_queue(schema: L.LabelSchema, who: str) -> L.LabelQueue | None:
    source = queue_source(schema)
    min_ann = st.sidebar.number_input("Annotations wanted per sample", 1, 10, 1, key="min_ann",
                                      help="Samples others started but that have fewer come first (overlap).")
    if source is None:
        return None
    key = (schema.name, who, min_ann, source[0])
    q = ss.get("lq")
    if st.sidebar.button("Refresh queue", key="refresh_queue") or q is None or q.key != key:
        q = L.new_queue(store, schema.name, source[1], annotator=who, min_annotations=min_ann, key=key)
        ss["lq"] = q
    return q


# ---- focus view: actions (callbacks, so one click is one rerun) ----------------------------------


def _pick_key(sid: int, name: str) -> str:
    return f"pick_{sid}_{name}"


def on_pick(sid: int, f: L.LabelField, choice: str) -> None:
    key = _pick_key(sid, f.name)
    if f.type == "multi_choice":
        chosen = set(ss.get(key) or [])
        chosen ^= {choice}
        ss[key] = [o for o in f.options if o in chosen]
    else:
        ss[key] = int(choice) if f.type == "rating" else choice


def on_submit(schema: L.LabelSchema, sid: int, who: str) -> None:
    values = {f.name: ss.get(_pick_key(sid, f.name)) for f in schema.fields}
    missing = L.missing_required(schema, values)
    if missing:
        ss["flash"] = ("warning", f"Pick a value for {', '.join(missing)} first.")
        return
    try:
        L.record_label(store, schema, sid, values, annotator=who, origin="focus", session=ss["label_session"])
    except L.LabelError as exc:
        ss["flash"] = ("error", str(exc))
        return
    ss["lq"].advance()
    ss["flash"] = ("success", f"Labelled sample {sid}.")


def on_skip(schema: L.LabelSchema, sid: int, who: str) -> None:
    L.record_skip(store, schema, sid, annotator=who, session=ss["label_session"])
    ss["lq"].advance()
    ss["flash"] = ("info", f"Skipped sample {sid}.")


def on_move(step: int) -> None:
    ss["lq"].move(step)


def on_undo(schema: L.LabelSchema, who: str) -> None:
    sid = L.undo_in_queue(store, schema, ss["lq"], annotator=who, session=ss["label_session"])
    if sid is None:
        ss["flash"] = ("info", "Nothing to undo.")
        return
    for f in schema.fields:
        ss.pop(_pick_key(sid, f.name), None)
    ss["flash"] = ("info", f"Undid your last action on sample {sid}.")


# ---- focus view: drawing -------------------------------------------------------------------------


def show_sample(sample: dict[str, Any]) -> None:
    st.caption(md_text(f"sample {sample['id']} · {sample['dataset']} · source id {sample['source_id']}"))
    for turn in sample["messages"]:
        st.markdown(f"**{md_text(turn['role'])}**")  # the role comes from the data: literal characters
        st.text(turn["content"])
    if sample.get("rejected"):
        st.markdown("**rejected response**")
        for turn in sample["rejected"][-1:]:
            st.text(turn["content"])


def prefill(schema: L.LabelSchema, sid: int, who: str) -> dict[str, L.Suggestion] | None:
    """First visit of a sample: my earlier labels, else the machine's suggestions, into the form."""
    seen = f"prefilled_{sid}"
    sugg = L.suggestion_for(store, schema, sid)
    if ss.get(seen):
        return sugg
    ss[seen] = True
    mine = L.my_current(store, schema.name, sid, who)
    for f in schema.fields:
        if f.name in mine:
            ss[_pick_key(sid, f.name)] = mine[f.name]
        elif sugg and f.name in sugg:
            try:
                ss[_pick_key(sid, f.name)] = L.canonical_value(f, sugg[f.name].value)
            except L.LabelError:
                pass
    return sugg


def field_widget(schema: L.LabelSchema, f: L.LabelField, sid: int, sugg: dict | None) -> None:
    key = _pick_key(sid, f.name)
    current = ss.get(key)
    st.markdown(f"**{md_text(f.name)}**" + (f" — {md_text(f.description)}" if f.description else ""))
    if sugg and f.name in sugg:
        s = sugg[f.name]
        score = "" if s.score is None else f" ({s.score:.2f})"
        st.caption(md_text(f"suggested by {s.source}{score}: {s.value}"))
    if f.type == "free_text":
        st.text_area(f.name, key=key, label_visibility="collapsed")
        return
    primary = f is schema.primary
    cols = st.columns(2)
    for i, choice in enumerate(f.choices):
        chosen = choice in current if isinstance(current, list) else str(current) == choice
        digit = str((i + 1) % 10) if primary and i < 10 else None
        label = md_text(f"{digit} · {choice}" if digit else choice)
        cols[i % 2].button(label, key=f"btn_{f.name}_{i}", type="primary" if chosen else "secondary",
                           shortcut=digit, on_click=on_pick, args=(sid, f, choice), width="stretch")


def focus_view(schema: L.LabelSchema, who: str) -> None:
    q = ss["lq"]
    done, total = L.progress(store, schema.name, q.candidates, annotator=who)
    st.progress(done / total if total else 0.0, text=f"Progress ({md_text(who)}): {done} / {total} labelled")
    flash = ss.pop("flash", None)
    if flash:
        getattr(st, flash[0])(md_text(flash[1]))
    nav = st.columns(5)
    nav[0].button("← Prev", key="prev", shortcut="Left", on_click=on_move, args=(-1,))
    nav[1].button("Next →", key="next", shortcut="Right", on_click=on_move, args=(1,))
    if q.done:
        nav[3].button("Undo (U)", key="undo", shortcut="U", on_click=on_undo, args=(schema, who))
        st.success("Queue done: nothing left for you here. Change the source or refresh the queue.")
        return
    sid = q.current
    nav[2].button("Skip (S)", key="skip", shortcut="S", on_click=on_skip, args=(schema, sid, who))
    nav[3].button("Undo (U)", key="undo", shortcut="U", on_click=on_undo, args=(schema, who))
    nav[4].caption(f"item {q.pos + 1} of {len(q.queue)}")
    sugg = prefill(schema, sid, who)
    left, right = st.columns([3, 2])
    with left:
        show_sample(get_sample(store, sid))
    with right:
        if schema.guidelines:
            with st.expander("Guidelines", expanded=False):
                st.markdown(schema.guidelines)  # the user's own text
        for f in schema.fields:
            field_widget(schema, f, sid, sugg)
        st.button("Submit ⏎", key="submit", type="primary", shortcut="Enter", on_click=on_submit,
                  args=(schema, sid, who), width="stretch")


# ---- bulk view -----------------------------------------------------------------------------------


def bulk_view(schema: L.LabelSchema, who: str) -> None:
    q = ss["lq"]
    size = st.select_slider("Page size", [10, 25, 50, 100], value=25, key="bulk_size")
    ids = q.page(size)
    if not ids:
        st.success("Queue done: nothing left for you here.")
        return
    rows = L.bulk_rows(store, ids)
    # Off by default: one click must never label a page of samples nobody has read.
    rows.insert(0, "pick", ss.get("bulk_all", False))
    st.toggle("Check all", value=False, key="bulk_all")
    edited = st.data_editor(rows, key=f"bulk_editor_{q.pos}_{size}", hide_index=True, disabled=["id", "text"],
                            column_config={**column_labels(rows.columns), "pick": st.column_config.CheckboxColumn("✓")})
    f = schema.primary
    if f.type == "multi_choice":
        value = st.multiselect(f.name, f.choices, key="bulk_value")
    elif f.type == "free_text":
        value = st.text_input(f.name, key="bulk_value")
    else:
        value = st.radio(f.name, f.choices, horizontal=True, index=None, key="bulk_value")
    checked = [int(i) for i in edited.loc[edited["pick"], "id"]]
    if st.button(f"Apply to {len(checked)} checked", type="primary", disabled=not checked or not value,
                 key="bulk_apply"):
        stored = int(value) if f.type == "rating" else value
        L.record_bulk(store, schema, checked, {f.name: stored}, annotator=who, session=ss["label_session"])
        q.remove(checked)
        ss["flash"] = ("success", f"Labelled {plural(len(checked), 'sample')} {f.name} = {value}.")
        st.rerun()
    flash = ss.pop("flash", None)
    if flash:
        getattr(st, flash[0])(md_text(flash[1]))


# ---- agreement -----------------------------------------------------------------------------------


def own_distribution(schema: L.LabelSchema, progress: pd.DataFrame) -> None:
    """Fewer than two annotators on any sample: no agreement to compute, so show what each one chose."""
    who = ", ".join(progress["annotator"].astype(str)) or "nobody yet"
    st.info(f"Agreement needs at least two annotators labelling the same samples; so far "
            f"{plural(len(progress), 'annotator')} ({who}) and no sample labelled by two. Ask a second "
            "annotator to label the same queue (raise \"Annotations wanted per sample\" to 2 in the sidebar).")
    for f in schema.fields:
        if f.type == "free_text":
            continue
        st.subheader(f"{f.name}: labels given")
        st.dataframe(**table(L.label_distribution(store, schema.name, f.name)), hide_index=True)


def agreement_view(schema: L.LabelSchema, who: str) -> None:
    progress = L.annotator_progress(store, schema.name)
    st.dataframe(**table(progress), hide_index=True)
    if L.n_shared_samples(store, schema.name) == 0:
        own_distribution(schema, progress)
        return
    for fa in A.agreement_report(store, schema):
        st.subheader(md_text(f"{fa.field} ({fa.level})"))
        alpha = "n/a" if pd.isna(fa.alpha) else f"{fa.alpha:.3f}"
        st.metric("Krippendorff's alpha", alpha, help=f"over {plural(fa.n_samples, 'sample')} with 2+ annotators")
        st.caption("Cohen's kappa per pair of annotators")
        st.dataframe(**table(fa.pairs), hide_index=True)
        if not fa.machine.empty:
            st.caption("Agreement with machine tags")
            st.dataframe(**table(fa.machine), hide_index=True)
        st.caption(plural(len(fa.disagreements), "disagreement"))
        if fa.disagreements.empty:
            continue
        shown = fa.disagreements.assign(values=fa.disagreements["values"].map(str))
        st.dataframe(**table(shown), hide_index=True)
        f = schema.field(fa.field)
        c1, c2, c3 = st.columns(3)
        sid = c1.selectbox("Sample", fa.disagreements["sample_id"].tolist(), key=f"adj_sid_{f.name}")
        value = c2.selectbox("Adjudicated value", f.choices, key=f"adj_val_{f.name}")
        if c3.button("Adjudicate", key=f"adj_go_{f.name}"):
            L.adjudicate(store, schema, int(sid), f.name, int(value) if f.type == "rating" else value,
                         annotator=who, session=ss["label_session"])
            success(f"Sample {sid}: {f.name} = {value} (adjudicated by {who})")


# ---- the page ------------------------------------------------------------------------------------


def main() -> None:
    pending = ss.pop("label_pending", None)
    if pending:  # set by an action of the previous run, before the widgets it names are drawn
        ss.update(pending)
    who = annotator()
    st.sidebar.caption(f"Labelling as **{md_text(who)}**" if _logged_in_name() else md_text(f"Labelling as {who}"))
    schemas = L.list_schemas(store)
    view = st.sidebar.radio("View", ["Focus", "Bulk", "Agreement", "Schemas"], key="view",
                            index=3 if schemas.empty else 0)
    if view == "Schemas" or schemas.empty:
        st.title("Label schemas")
        st.dataframe(**table(schemas), hide_index=True)
        schema_editor()
        return
    name = st.sidebar.selectbox("Schema", schemas["name"].tolist(), key="schema_pick")
    schema = L.get_schema(store, name)
    st.title(md_text(f"Label · {schema.title}"))
    if view == "Agreement":
        agreement_view(schema, who)
        return
    if ensure_queue(schema, who) is None:
        return
    components.html(CTRL_Z, height=0)
    if view == "Focus":
        st.fragment(focus_view)(schema, who)
    else:
        bulk_view(schema, who)


run_page(main)
