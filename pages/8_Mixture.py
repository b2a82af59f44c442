"""Mixture page: compose a recipe with widgets (or YAML), preview its composition, compare, export a zip."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
import yaml

import core.mixture.figures as viz_mixture
from core import safe_yaml
from core.browse.display import plural, table
from core.mixture.build import Composition, preview
from core.mixture.export import export_mixture, zip_export
from core.mixture.fields import grouping_fields
from core.mixture.recipe import FLAGS, FORMATS, SELECTION_METHODS, Recipe, RecipeError, load_recipe
from core.mixture.saved import get_recipe, list_recipes, save_recipe
from core.store.database import Store, StoreError
from ui import error, md_text, open_store, run_page

MODES = ("weight", "count", "tokens")
DEDUP = ("none", "exact", "near", "semdedup", "semantic")
FILTER_HELP = ("One filter per line: `field op value` (value in YAML: 512, [a, b], [0, 300]); "
               "percentiles: `tag.response_quality percentile_ge 30 by tag.category`. "
               "Fields: n_tokens, n_turns, n_chars, text, meta.<key>, tag.<name>, label.<schema>.<field>.")


def plain(text: str) -> str:
    """Escape markdown so names and descriptions from the store show as typed, never as markup."""
    return md_text(text)


def parse_filter_lines(text: str) -> list[dict[str, Any]]:
    """`field op value [by FIELD]` lines -> filter dicts (recipe validation checks them)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        by = None
        if " by " in line:
            line, by = line.rsplit(" by ", 1)
        parts = line.split(None, 2)
        item: dict[str, Any] = {"field": parts[0], "op": parts[1] if len(parts) > 1 else None}
        if len(parts) > 2:
            item["value"] = safe_yaml.load(parts[2], "a filter value")
        if by:
            item["by"] = by.strip()
        out.append(item)
    return out


def filter_lines(filters: list[Any]) -> str:
    lines = []
    for f in filters:
        if f.flag:
            continue
        text = f"{f.field} {f.op}"
        if f.value is not None:
            text += " " + yaml.safe_dump(f.value, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(text + (f" by {f.by}" if f.by else ""))
    return "\n".join(lines)


def recipe_from_widgets(names: list[str]) -> dict[str, Any]:
    ss = st.session_state
    sources = []
    for name in names:
        src: dict[str, Any] = {"dataset": name}
        mode, amount = ss.get(f"mix_mode_{name}", "weight"), ss.get(f"mix_amt_{name}", 1.0)
        src[mode] = int(amount) if mode != "weight" else float(amount)
        if ss.get(f"mix_replace_{name}"):
            src["replace"] = True
        if ss.get(f"mix_cat_{name}", "").strip():
            src["category"] = ss[f"mix_cat_{name}"].strip()
        filters = parse_filter_lines(ss.get(f"mix_filters_{name}", ""))
        filters += [{"flag": flag} for flag in ss.get(f"mix_flags_{name}", [])]
        if filters:
            src["filters"] = filters
        sources.append(src)
    targets: dict[str, Any] = {}
    if ss.get("mix_total"):
        targets["total"] = int(ss["mix_total"])
    elif ss.get("mix_total_tokens"):
        targets["total_tokens"] = int(ss["mix_total_tokens"])
    if ss.get("mix_by", "").strip():
        targets["by"] = ss["mix_by"].strip()
    props = safe_yaml.load(ss.get("mix_props", "") or "", "the proportions") or {}
    if props:
        targets["proportions"] = props
    raw: dict[str, Any] = {"name": ss.get("mix_name", "mixture"), "seed": int(ss.get("mix_seed", 0)),
                           "sources": sources}
    if targets:
        raw["targets"] = targets
    if ss.get("mix_dedup", "none") != "none":
        raw["dedup"] = {"method": ss["mix_dedup"]}
    selection = {"method": ss.get("mix_method", "random")}
    if ss.get("mix_score", "").strip():
        selection["score"] = ss["mix_score"].strip()
    raw["selection"] = selection
    raw["export"] = {"formats": ss.get("mix_formats", ["openai"]), "validation": float(ss.get("mix_val", 0.0))}
    return raw


def load_into_widgets(recipe: Recipe) -> None:
    """Set every widget from a recipe (after the YAML was edited or a saved recipe loaded)."""
    ss = st.session_state
    ss["mix_name"], ss["mix_seed"] = recipe.name, recipe.seed
    ss["mix_datasets"] = recipe.datasets
    for s in recipe.sources:
        ss[f"mix_mode_{s.dataset}"] = s.mode
        ss[f"mix_amt_{s.dataset}"] = float(getattr(s, s.mode) or 1.0)
        ss[f"mix_replace_{s.dataset}"] = s.replace
        ss[f"mix_cat_{s.dataset}"] = s.category or ""
        ss[f"mix_filters_{s.dataset}"] = filter_lines(s.filters)
        ss[f"mix_flags_{s.dataset}"] = [f.flag for f in s.filters if f.flag]
    t = recipe.targets
    ss["mix_total"], ss["mix_total_tokens"] = t.total or 0, t.total_tokens or 0
    ss["mix_by"] = t.by or ""
    ss["mix_props"] = yaml.safe_dump(t.proportions, default_flow_style=False) if t.proportions else ""
    ss["mix_dedup"] = recipe.dedup.method if recipe.dedup and recipe.dedup.method else "none"
    ss["mix_method"], ss["mix_score"] = recipe.selection.method, recipe.selection.score or ""
    ss["mix_formats"], ss["mix_val"] = recipe.export.formats, recipe.export.validation


def _store_stamp(store: Store) -> float:
    path = Path(store.path)
    return max((p.stat().st_mtime for p in (path, Path(str(path) + ".wal")) if p.exists()), default=0.0)


@st.cache_data(ttl=600, show_spinner=False, max_entries=8)
def cached_preview(db: str, recipe_yaml: str, stamp: float) -> Composition:
    return preview(Store(db), load_recipe(recipe_yaml))


def draw_composition(comp: Composition) -> None:
    c1, c2, c3 = st.columns(3)
    c1.metric("samples", f"{comp.n_selected:,}")
    c2.metric("tokens", f"{comp.n_tokens:,}")
    c3.metric("sources", f"{int((comp.sources.n_selected > 0).sum())}")
    st.plotly_chart(viz_mixture.before_after_bar(comp.sources), key="mix_before_after")
    left, right = st.columns(2)
    view = left.selectbox("view", list(viz_mixture.VIEWS), key="mix_view")
    measure = right.radio("measure", ["samples", "tokens"], horizontal=True, key="mix_measure")
    left.plotly_chart(viz_mixture.composition_bar(comp.composition, view, "n" if measure == "samples" else "tokens"),
                      key="mix_bar")
    right.plotly_chart(viz_mixture.sunburst(comp.composition), key="mix_sunburst")
    st.dataframe(**table(comp.sources[["dataset", "license", "synthetic", "n_total", "n_after_filters", "n_selected",
                                       "tokens_selected"]]), hide_index=True)


def draw_filters(comp: Composition) -> None:
    if comp.filter_counts.empty:
        st.text("No filters in this recipe.")
        return
    st.dataframe(**table(comp.filter_counts), hide_index=True)
    for row in comp.filter_counts.itertuples():
        ex = comp.examples[(comp.examples.source == row.source) & (comp.examples.step == row.step)] \
            if len(comp.examples) else pd.DataFrame()
        with st.expander(f"{row.source} · {row.filter}: removes {row.removed:,}"):
            if ex.empty:
                st.text("nothing removed" if not row.removed else "examples are not available for this step")
            for e in ex.itertuples():
                st.text(f"#{e.sample_id}: {e.text}")  # dataset text as plain text


def draw_warnings(comp: Composition) -> None:
    if not comp.warnings:
        st.success("No warnings.")
    for w in comp.warnings:
        (st.error if w.severity == "error" else st.warning)(plain(w.message), icon="⚠️")


def draw_compare(store: Store, comp: Composition, recipe_yaml: str) -> None:
    saved = list_recipes(store)
    choices = ["(paste YAML)"] + [f"{r.recipe_id}: {r.name}" for r in saved.itertuples()]
    pick = st.selectbox("compare with", choices, key="mix_cmp_pick")
    other_yaml = (get_recipe(store, int(pick.split(":")[0])).to_yaml() if pick != choices[0]
                  else st.text_area("recipe B (YAML)", value=recipe_yaml, key=f"mix_cmp_yaml_{hash(recipe_yaml)}",
                                    height=200))
    try:
        other = cached_preview(str(store.path), other_yaml, _store_stamp(store))
    except (RecipeError, ValueError, KeyError) as exc:
        error(f"Recipe B: {exc}")
        return
    a, b = st.columns(2)
    for col, c, label in ((a, comp, "A (this recipe)"), (b, other, f"B ({other.recipe.name})")):
        col.text(f"{label}: {plural(c.n_selected, 'sample')}, {plural(c.n_tokens, 'token')}, {plural(len(c.warnings), 'warning')}")
        col.dataframe(**table(c.sources[["dataset", "n_selected", "tokens_selected"]]), hide_index=True)
    view = st.selectbox("compare by", list(viz_mixture.VIEWS), key="mix_cmp_view")
    st.plotly_chart(viz_mixture.compare_bar(comp.composition, other.composition, ("A", "B"), view), key="mix_cmp")


def draw_export(store: Store, recipe: Recipe) -> None:
    allow = st.checkbox("export even if a target cannot be met", key="mix_allow")
    if st.button("Export", key="mix_export", type="primary"):
        bar = st.progress(0.0, text="starting")
        # Kept beside the store (not in a temp folder): the run records this path and the manifest's hashes.
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = Path(store.path).parent / "exports" / f"{recipe.name.replace('/', '_')}-{stamp}"
        try:
            result = export_mixture(store, recipe, out, allow_shortfall=allow or None,
                                    progress=lambda stage, frac: bar.progress(min(frac, 1.0), text=stage))
        except (RecipeError, ValueError, KeyError, FileExistsError, StoreError) as exc:
            error(exc)
            return
        st.session_state["mix_zip"] = (f"{out.name}.zip", zip_export(result.out_dir), result.run_id,
                                       len(result.files), str(result.out_dir))
    if "mix_zip" in st.session_state:
        name, data, run_id, n_files, folder = st.session_state["mix_zip"]
        st.text(f"export run {run_id}: {plural(n_files, 'file')} in {folder}, {plural(len(data), 'byte')} zipped")
        st.download_button("Download zip", data=data, file_name=name, mime="application/zip", key="mix_download")


def compose_widgets(store: Store, names: list[str]) -> None:
    ss = st.session_state
    c1, c2 = st.columns([3, 1])
    c1.text_input("recipe name", key="mix_name")
    c2.number_input("seed", min_value=0, step=1, key="mix_seed")
    chosen = st.multiselect("sources", names, key="mix_datasets")
    for name in chosen:
        for key, value in ((f"mix_mode_{name}", "weight"), (f"mix_amt_{name}", 1.0), (f"mix_cat_{name}", ""),
                           (f"mix_replace_{name}", False), (f"mix_filters_{name}", ""), (f"mix_flags_{name}", [])):
            ss.setdefault(key, value)
        with st.expander(name, expanded=len(chosen) <= 3):
            a, b, c, d = st.columns(4)
            a.selectbox("how much", MODES, key=f"mix_mode_{name}")
            b.number_input("amount", min_value=0.0, step=1.0, key=f"mix_amt_{name}")
            c.text_input("category", key=f"mix_cat_{name}", help="used when the `by` field has no value")
            d.checkbox("upsample if short", key=f"mix_replace_{name}")
            st.text_area("filters", key=f"mix_filters_{name}", help=FILTER_HELP, height=80)
            st.multiselect("flags", FLAGS, key=f"mix_flags_{name}")
    st.markdown("**Targets**")
    a, b, c = st.columns(3)
    a.number_input("total samples (0: none)", min_value=0, step=100, key="mix_total")
    b.number_input("total tokens (0: none)", min_value=0, step=10_000, key="mix_total_tokens")
    by_options = ["", *grouping_fields(store, chosen)]
    if ss.get("mix_by") and ss["mix_by"] not in by_options:  # a loaded recipe may name a field not here yet
        by_options.append(ss["mix_by"])
    c.selectbox("proportions by", by_options, key="mix_by", format_func=lambda f: f or "(nothing: no proportions)",
                help="the fields these sources have: source, meta.<key>, tag.<name>, label.<schema>.<field>")
    st.text_area("proportions (category: share, one per line)", key="mix_props", height=80)
    a, b, c = st.columns(3)
    a.selectbox("de-duplication", DEDUP, key="mix_dedup")
    b.selectbox("selection", SELECTION_METHODS, key="mix_method")
    c.text_input("score field (top, kmq)", key="mix_score")
    a, b = st.columns(2)
    a.multiselect("export formats", FORMATS, key="mix_formats")
    b.number_input("validation fraction", min_value=0.0, max_value=0.5, step=0.05, key="mix_val")


def init_state() -> None:
    ss = st.session_state
    for key, value in {"mix_seed": 0, "mix_total": 0, "mix_total_tokens": 0, "mix_by": "", "mix_props": "",
                       "mix_dedup": "none", "mix_method": "random", "mix_score": "", "mix_formats": ["openai"],
                       "mix_val": 0.0, "mix_datasets": [], "mix_name": "my-mixture"}.items():
        ss.setdefault(key, value)
    if "mix_pending" in ss:  # a recipe applied from YAML or loaded: set widgets before they are drawn
        load_into_widgets(ss.pop("mix_pending"))


def main() -> None:
    st.set_page_config(page_title="Mixture", layout="wide")
    st.title("Mixture")
    store, names = open_store()
    init_state()
    compose_tab, yaml_tab = st.tabs(["Compose", "YAML"])
    with compose_tab:
        compose_widgets(store, names)
    raw = recipe_from_widgets(st.session_state.get("mix_datasets", []))
    recipe_yaml = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
    with yaml_tab:
        edited = st.text_area("recipe (YAML)", value=recipe_yaml, height=380, key=f"mix_yaml_{hash(recipe_yaml)}")
        a, b = st.columns(2)
        if a.button("Apply YAML", key="mix_apply"):
            try:
                st.session_state["mix_pending"] = load_recipe(edited)
                st.rerun()
            except RecipeError as exc:
                error(exc)
        saved = list_recipes(store)
        if len(saved):
            pick = b.selectbox("load a saved recipe", [f"{r.recipe_id}: {r.name}" for r in saved.itertuples()],
                               key="mix_load_pick")
            if b.button("Load", key="mix_load"):
                st.session_state["mix_pending"] = get_recipe(store, int(pick.split(":")[0]))
                st.rerun()
    if not raw["sources"]:
        st.info("Pick one or more sources to see a preview.")
        return
    try:
        recipe = load_recipe(recipe_yaml)
        with st.spinner("composing…"):
            comp = cached_preview(str(store.path), recipe.to_yaml(), _store_stamp(store))
    except (RecipeError, ValueError, KeyError, StoreError) as exc:
        error(f"Recipe: {exc}")
        return
    if st.button("Save recipe", key="mix_save"):
        st.text(f"saved as recipe {save_recipe(store, recipe)}")
    tabs = st.tabs(["Composition", "Arithmetic", "Filters", f"Warnings ({len(comp.warnings)})", "Compare", "Export"])
    with tabs[0]:
        draw_composition(comp)
    with tabs[1]:
        for line in comp.plan.steps + comp.selection_notes:
            st.text(line)
        if comp.plan.issues:  # each is listed once, under Warnings (where export checks them)
            st.error(f"{plural(len(comp.plan.issues), 'target')} cannot be met: see the Warnings tab for "
                     "why and what to change.")
        st.dataframe(**table(comp.plan.cells), hide_index=True)
    with tabs[2]:
        draw_filters(comp)
    with tabs[3]:
        draw_warnings(comp)
    with tabs[4]:
        draw_compare(store, comp, recipe.to_yaml())
    with tabs[5]:
        draw_export(store, recipe)


run_page(main)
