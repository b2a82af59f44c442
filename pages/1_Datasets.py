"""Dataset page: facts, search, filters, sorting, paging, and one sample turn by turn (as plain text)."""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import streamlit as st

from core.browse.display import label, plural, table
from core.browse.samples import (
    Column,
    Filter,
    column_catalog,
    get_sample,
    is_integral,
    matching_ids,
    query_samples,
    signal_columns,
    top_values,
    value_range,
)
from core.browse.search_index import SEARCH_HELP
from core.browse.selections import save_selection
from core.signals import parse_filter, sample_signals
from core.store.database import DatasetInfo, Store, StoreError, default_db_path
from ui import error, md_text, run_page, success, warning

PAGE_SIZES = [25, 50, 100, 200]
MAX_TURN_CHARS = 20_000  # longer turns are cut in the view unless the user asks for all of it
_uids = itertools.count(1)


@st.cache_data(ttl=300, show_spinner=False)
def _range(db: str, dataset: str, loaded_at: Any, column: str) -> tuple[float | None, float | None]:
    return value_range(Store(db), dataset, column)


@st.cache_data(ttl=300, show_spinner=False)
def _integral(db: str, dataset: str, loaded_at: Any, column: str) -> bool:
    return is_integral(Store(db), dataset, column)


def _bound_text(value: float | None, integral: bool) -> str:
    if value is None:
        return "—"
    return f"{int(value):,}" if integral else f"{value:,.4g}"


@st.cache_data(ttl=300, show_spinner=False)
def _top(db: str, dataset: str, loaded_at: Any, column: str) -> list[str]:
    values = top_values(Store(db), dataset, column, k=50)["value"]
    return [v for v in values if v is not None]


def pick_dataset(store: Store) -> DatasetInfo | None:
    names = store.dataset_names()
    if not names:
        st.info("The store has no datasets yet. Load one from the Home page (first in the sidebar).")
        return None
    wanted = st.query_params.get("dataset")
    if wanted in names and wanted != st.session_state.get("_dataset_param"):
        st.session_state["dataset"] = wanted  # a link (or a reload) names the dataset
    st.session_state["_dataset_param"] = wanted
    if st.session_state.get("dataset") not in names:
        st.session_state["dataset"] = names[0]
    name = st.selectbox("Dataset", names, key="dataset")
    if st.session_state.get("_shown_dataset") != name:
        st.session_state.pop("open_sample", None)  # a sample of another dataset would confuse
        st.session_state["_shown_dataset"] = name
    if st.query_params.get("dataset") != name:
        st.query_params["dataset"] = name
        st.session_state["_dataset_param"] = name
    return store.dataset(name)


def facts(info: DatasetInfo) -> None:
    st.header(md_text(info.name))
    cols = st.columns(5)
    cols[0].metric("Samples", f"{info.n_samples:,}")
    cols[1].metric("Records read", f"{info.n_records:,}")
    cols[2].metric("Skipped records", f"{info.n_skipped:,}")
    cols[3].metric("Licence", md_text(info.license or "unknown"))
    cols[4].metric("Shape", md_text(info.shape or "?"))
    kind = ("synthetic" if info.synthetic else "not synthetic") + (", evaluation benchmark" if info.is_eval else "")
    st.text(f"Source: {info.source}  ({info.format})\n{kind}; loaded {info.loaded_at:%Y-%m-%d %H:%M:%S} UTC")
    if info.description:
        st.text(info.description)
    with st.expander("Load options"):
        st.json(info.load_options)


# ---- filters -----------------------------------------------------------------------------------


def _filters_state(info: DatasetInfo) -> list[dict[str, Any]]:
    return st.session_state.setdefault("filters", {}).setdefault(info.name, [])


def _add_filter(info: DatasetInfo) -> None:
    _filters_state(info).append({"uid": next(_uids), "column": st.session_state["new_filter_column"]})


def _remove_filter(info: DatasetInfo, uid: int) -> None:
    state = _filters_state(info)
    state[:] = [f for f in state if f["uid"] != uid]


def _filter_widgets(store: Store, info: DatasetInfo, column: Column, uid: int) -> Filter | None:
    key = f"filter_{uid}"
    if column.kind == "numeric":
        lo, hi = _range(str(store.path), info.name, info.loaded_at, column.name)
        # Whole-number columns (counts, ids) take integers: "min 44", never "min 44.0".
        integral = _integral(str(store.path), info.name, info.loaded_at, column.name)
        step: Any = 1 if integral else None
        left, right = st.columns(2)
        low = left.number_input(md_text(f"{label(column.name)} from"), value=None, step=step, key=f"{key}_lo",
                                placeholder=f"min {_bound_text(lo, integral)}")
        high = right.number_input(md_text(f"{label(column.name)} to"), value=None, step=step, key=f"{key}_hi",
                                  placeholder=f"max {_bound_text(hi, integral)}")
        return Filter(column.name, "between", (low, high)) if low is not None or high is not None else None
    if column.kind == "category":
        chosen = st.multiselect(md_text(f"{column.name} is one of"), _top(str(store.path), info.name, info.loaded_at,
                                                                  column.name), key=f"{key}_in")
        return Filter(column.name, "in", chosen) if chosen else None
    if column.kind == "bool":
        choice = st.selectbox(md_text(column.name), ["any", "true", "false"], key=f"{key}_eq")
        return Filter(column.name, "eq", choice == "true") if choice != "any" else None
    term = st.text_input(md_text(f"{column.name} contains"), key=f"{key}_contains")
    return Filter(column.name, "contains", term) if term else None


def filter_builder(store: Store, info: DatasetInfo, catalog: list[Column]) -> list[Filter]:
    by_name = {c.name: c for c in catalog}
    state = [f for f in _filters_state(info) if f["column"] in by_name]
    active: list[Filter] = []
    with st.expander(f"Filters ({len(state)})", expanded=bool(state)):
        for item in state:
            body, remove = st.columns([12, 1], vertical_alignment="bottom")
            with body:
                flt = _filter_widgets(store, info, by_name[item["column"]], item["uid"])
            remove.button("✕", key=f"remove_{item['uid']}", help="remove this filter",
                          on_click=_remove_filter, args=(info, item["uid"]))
            if flt is not None:
                active.append(flt)
        left, right = st.columns([4, 1], vertical_alignment="bottom")
        left.selectbox("Add a filter on", [c.name for c in catalog], key="new_filter_column",
                       format_func=lambda n: f"{label(n)}  ({by_name[n].kind})")
        right.button("Add filter", on_click=_add_filter, args=(info,))
        lines = st.text_area("Filters as text, one per line (NAME:OP[:VALUE], e.g. tag.category:eq:Math, "
                             "noise.cleanlab.flag:is_true, contamination:eq:clean)", key="filter_text", height=68)
        active += [parse_filter(line.strip()) for line in lines.splitlines() if line.strip()]
    return active


# ---- results -----------------------------------------------------------------------------------


def _step_page(delta: int, n_pages: int) -> None:
    st.session_state["page_no"] = min(max(1, st.session_state.get("page_no", 1) + delta), n_pages)


def _open_typed() -> None:
    if st.session_state.get("sample_id_input") is not None:
        st.session_state["open_sample"] = int(st.session_state["sample_id_input"])


def signal_picker(signal_cols: list[Column]) -> list[str]:
    """Which signals to show as columns; each option's help is its description."""
    if not signal_cols:
        return []
    with st.expander(f"Signals ({len(signal_cols)}): per-sample values runs made"):
        chosen = st.multiselect("Show as columns", [c.name for c in signal_cols], key="shown_signals")
        st.text("\n".join(f"{c.name} ({c.kind}): {c.description}" for c in signal_cols))
    return chosen


def results(store: Store, info: DatasetInfo, catalog: list[Column], query: dict[str, Any]) -> None:
    st.session_state.setdefault("page_size", 50)
    signature = repr((info.name, query, st.session_state["page_size"]))
    if st.session_state.get("_query_signature") != signature:
        st.session_state["page_no"] = 1  # a new search, filter or sort starts on its first page
        st.session_state["_query_signature"] = signature
    st.session_state.setdefault("page_no", 1)
    size = st.session_state["page_size"]
    with st.spinner("Querying …"):
        page = query_samples(store, info, offset=(st.session_state["page_no"] - 1) * size, limit=size, **query)
        if page.total and not len(page.rows):  # the page number ran past the end: show the last page
            st.session_state["page_no"] = page.n_pages
            page = query_samples(store, info, offset=(page.n_pages - 1) * size, limit=size, **query)
    st.text(f"rows {page.first_row:,}–{page.last_row:,} of {page.total:,} matching "
            f"(dataset has {info.n_samples:,})")
    # A new key per query and page, so that a row selected on one page is not carried to another.
    digest = hashlib.sha1(signature.encode()).hexdigest()[:12]
    table_key = f"table_{digest}_{st.session_state['page_no']}"
    event = st.dataframe(
        **table(page.rows, {"preview": st.column_config.TextColumn("preview (first user turn)", width="large")}),
        key=table_key, hide_index=True, width="stretch", height=min(38 + 35 * len(page.rows), 600),
        on_select="rerun", selection_mode="single-row",
    )
    selected = (table_key, tuple(event.selection.rows))
    if event.selection.rows and st.session_state.get("_selected_row") != selected:
        # A newly selected row opens its sample (a sample id typed in later still wins, until the next click).
        st.session_state["open_sample"] = page.ids[event.selection.rows[0]]
        st.session_state["_selected_row"] = selected
    prev, number, total, size_col, nxt = st.columns([1, 2, 2, 2, 1], vertical_alignment="bottom")
    prev.button("◀ Previous", on_click=_step_page, args=(-1, page.n_pages), disabled=st.session_state["page_no"] <= 1)
    number.number_input("Page", min_value=1, max_value=page.n_pages, step=1, key="page_no")
    total.text(f"of {plural(page.n_pages, 'page')}")
    size_col.selectbox("Rows per page", PAGE_SIZES, key="page_size")
    nxt.button("Next ▶", on_click=_step_page, args=(1, page.n_pages),
               disabled=st.session_state["page_no"] >= page.n_pages)
    save_selection_form(store, info, query, page.total)


def save_selection_form(store: Store, info: DatasetInfo, query: dict[str, Any], total: int) -> None:
    with st.expander(f"Save these {total:,} results as a selection"):
        name = st.text_input("Selection name", key="selection_name")
        if st.button("Save selection", disabled=not total):
            if not name.strip():
                st.error("Give the selection a name.")
                return
            where = {k: v for k, v in query.items() if k not in ("sort", "descending", "signals")}
            ids = matching_ids(store, info, **where)
            predicate = {"dataset": info.name, "search": query["search"], "search_column": query["search_column"],
                         "filters": [vars(f) for f in query["filters"]]}
            selection_id = save_selection(store, name.strip(), ids, origin="browse",
                                          description=f"from dataset {info.name}", predicate=predicate)
            success(f"Saved {plural(len(ids), 'sample')} as selection {name.strip()!r} (id {selection_id}).")


# ---- one sample --------------------------------------------------------------------------------


def conversation(turns: list[dict[str, Any]], key: str) -> None:
    full = st.checkbox("show very long turns in full", key=f"full_{key}") if any(
        len(t["content"] or "") > MAX_TURN_CHARS for t in turns) else False
    for turn in turns:
        role = turn["role"] or "?"
        avatar = None if role in ("user", "assistant") else ":material/settings:"
        with st.chat_message("user" if role == "user" else "assistant", avatar=avatar):
            _turn_blocks(turn, role, full)


def _clip(text: str, full: bool) -> str:
    if not full and len(text) > MAX_TURN_CHARS:
        return text[:MAX_TURN_CHARS] + f"\n… ({len(text) - MAX_TURN_CHARS:,} more characters)"
    return text


def _turn_blocks(turn: dict[str, Any], role: str, full: bool) -> None:
    """One turn as separate plain blocks: reasoning, content, each tool call; a tool result names its call.
    Plain text and code only, never markdown or HTML: dataset text can hold anything."""
    label = role.upper()
    if role == "tool" and (turn.get("name") or turn.get("tool_call_id")):
        label += " RESULT · " + " · ".join(str(turn[k]) for k in ("name", "tool_call_id") if turn.get(k))
    st.text(label)
    if turn.get("reasoning"):
        st.text("REASONING")
        st.code(_clip(turn["reasoning"], full), language=None, wrap_lines=True)
    content = turn["content"] or ""
    if content or not turn.get("tool_calls"):
        st.text(_clip(content, full))
    for call in turn.get("tool_calls") or []:
        fn = call.get("function") or {}
        st.text("TOOL CALL · " + str(fn.get("name", "?")) + (f" · {call['id']}" if call.get("id") else ""))
        st.code(_clip(str(fn.get("arguments", "")), full), language="json", wrap_lines=True)


def sample_view(store: Store, info: DatasetInfo) -> None:
    st.divider()
    st.number_input("Open sample by id (or select a row above)", min_value=0, value=None, step=1,
                    key="sample_id_input", on_change=_open_typed)
    sample_id = st.session_state.get("open_sample")
    if sample_id is None:
        st.caption("Select a row to see the sample.")
        return
    try:
        sample = get_sample(store, sample_id)
    except KeyError as exc:
        warning(exc.args[0])
        return
    st.subheader(f"Sample {sample['id']}")
    st.text(f"dataset {sample['dataset']} · source id {sample['source_id']} · row {sample['row_idx']} · "
            f"{plural(sample['n_turns'], 'turn')} · {plural(sample['n_chars'], 'character')} · "
            f"{plural(sample['n_tokens'], 'token')}")
    if sample["rejected"]:
        chosen, rejected = st.columns(2)
        with chosen:
            st.text("CHOSEN")
            conversation(sample["messages"], f"{sample_id}_chosen")
        with rejected:
            st.text("REJECTED")
            conversation(sample["rejected"], f"{sample_id}_rejected")
    else:
        conversation(sample["messages"], str(sample_id))
    if sample.get("kto_label") is not None:
        st.text(f"KTO label: {'desirable' if sample['kto_label'] else 'undesirable'}")
    meta, tools, raw, sigs = st.tabs(["meta", "tools", "raw record", "signals"])
    values = sample_signals(store, sample_id)
    if values.empty:
        sigs.text("no signals yet: tag, map, label, noise, dedup or contamination runs add them")
    else:
        sigs.dataframe(**table(values), hide_index=True, width="stretch")
    meta.json(sample["meta"] or {})
    if sample.get("tools"):
        tools.json(sample["tools"])
    else:
        tools.text("no function definitions")
    raw.json(sample["raw"] if sample["raw"] is not None else {})


def main() -> None:
    st.set_page_config(page_title="Assay · Datasets", layout="wide")
    store = Store(default_db_path())
    try:
        info = pick_dataset(store)
        if info is None:
            return
        facts(info)
        signal_cols = signal_columns(store, info)
        catalog = column_catalog(store, info) + signal_cols
        names = [c.name for c in catalog]
        text_columns = ["text"] + [c.name for c in catalog if c.kind in ("text", "category") and c.name != "text"]
        search_col, in_col, sort_col, dir_col = st.columns([5, 2, 2, 1.3], vertical_alignment="bottom")
        search = search_col.text_input("Search", key="search", placeholder="case-insensitive substring",
                                       help=SEARCH_HELP)
        search_in = in_col.selectbox("in", text_columns, key="search_column")
        sort = sort_col.selectbox("Sort by", ["(dataset order)"] + names, key="sort")
        descending = dir_col.toggle("desc", key="descending", help="sort descending")
        filters = filter_builder(store, info, catalog)
        shown = signal_picker(signal_cols)
        query = {"search": search or None, "search_column": search_in, "filters": filters,
                 "sort": None if sort == "(dataset order)" else sort, "descending": descending}
        if shown:
            query["signals"] = shown
        results(store, info, catalog, query)
        sample_view(store, info)
    except StoreError as exc:
        error(exc)
    except ValueError as exc:
        error(f"Could not run that query: {exc}")


run_page(main)
