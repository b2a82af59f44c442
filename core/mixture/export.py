"""Export a mixture: JSONL (OpenAI messages, ShareGPT, Alpaca), Parquet, a Hugging Face dataset folder,
plus provenance.parquet, manifest.json, datasheet.md and charts/*.png.

Everything is written into a hidden staging folder beside the destination, named from the run id
(`.NAME.partial-run<ID>`), and renamed into place at the end, so an interrupted export leaves nothing
that looks complete; the next export removes the staging folders of runs whose process is gone
(`clean_interrupted_exports`). Rows stream from DuckDB with COPY
(ordered by their position), never through Python dicts. The same recipe and store give the same bytes:
selection is seeded per cell over candidates sorted by sample id, JSON keys have a fixed order, the
manifest holds no timestamps (those live in the runs table and in run.json, which is not hashed).

Layout:  openai/train.jsonl  sharegpt/train.jsonl  alpaca/train.jsonl  parquet/train.parquet  hf/
         (+ validation.* when export.validation > 0), provenance.parquet, recipe.yaml, manifest.json,
         datasheet.md, charts/*.png, run.json
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from core.errors import ConflictError, UserError
from core.mixture.build import Composition, MixturePlanError, Progress, compose_on
from core.mixture.datasheet import datasheet_markdown, write_charts
from core.mixture.recipe import Recipe, RecipeError
from core.mixture.saved import record_export
from core.store.database import CODE_VERSION, PROJECT_ROOT, Store, memory_limit, now_utc

_SPLITS = ("train", "validation")
# DuckDB's buffer pool during an export: without a bound a 1M-sample export peaked at 3.8 GB.
EXPORT_MEMORY_LIMIT = os.environ.get("ASSAY_EXPORT_MEMORY_LIMIT", "1GB")
_SYSTEM = "coalesce(list_filter(s.messages, lambda m: m.role = 'system')[1].content, '')"
_WEIGHT = "coalesce(c.weight, 1.0)"
_JSONL_FORMATS = ("openai", "sharegpt", "alpaca", "trl")


class ExportExistsError(ConflictError):
    """The output folder exists and overwriting was not asked for."""


@dataclass
class ExportResult:
    out_dir: Path
    run_id: int
    files: list[dict[str, Any]]
    manifest: dict[str, Any]
    composition: Composition

    def as_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "run_id": self.run_id, "n_samples": self.composition.n_selected,
                "n_tokens": self.composition.n_tokens, "files": self.files,
                "warnings": [w.to_dict() for w in self.composition.warnings]}


@dataclass(frozen=True)
class _Features:
    """What the selected samples hold beyond plain turns; columns and turn fields are written only where
    some sample has them, so plain mixtures export exactly as before."""

    extras: bool = False   # some turn has reasoning, tool calls, a tool call id or a name
    tools: bool = False
    kto: bool = False
    pairs: bool = False
    singles: bool = True


_FEATURES_SQL = (
    "SELECT coalesce(bool_or(list_bool_or(list_transform(s.messages || coalesce(s.rejected, []), lambda t: "
    "t.reasoning IS NOT NULL OR t.tool_calls IS NOT NULL OR t.tool_call_id IS NOT NULL OR t.name IS NOT NULL))), "
    "false), coalesce(bool_or(s.tools IS NOT NULL), false), coalesce(bool_or(s.kto_label IS NOT NULL), false), "
    "coalesce(bool_or(s.rejected IS NOT NULL), false), coalesce(bool_or(s.rejected IS NULL), false) "
    "FROM mix_sel m JOIN samples s ON s.id = m.sample_id")


def _features(con: duckdb.DuckDBPyConnection) -> _Features:
    return _Features(*con.execute(_FEATURES_SQL).fetchone())


def _openai_turns(expr: str, f: _Features) -> str:
    """Turns in OpenAI form: {role, content} or, where turns carry more, also tool_calls (content null when
    a turn only calls tools), tool_call_id, name and reasoning; absent fields are left out."""
    if not f.extras:
        return f"list_transform({expr}, lambda m: {{'role': m.role, 'content': m.content}})"
    content = "CASE WHEN m.tool_calls IS NOT NULL AND m.content = '' THEN NULL ELSE m.content END"
    return (f"list_transform({expr}, lambda m: json_merge_patch('{{}}', to_json({{'role': m.role, 'content': "
            f"{content}, 'tool_calls': m.tool_calls, 'tool_call_id': m.tool_call_id, 'name': m.name, "
            "'reasoning': m.reasoning})))")


_SHAREGPT_ROLE = "CASE m.role WHEN 'user' THEN 'human' WHEN 'assistant' THEN 'gpt' WHEN 'tool' THEN 'observation' ELSE m.role END"
# A tool call in LLaMA-Factory's ShareGPT form: a function_call turn whose value is JSON {name, arguments}
# (a list of them for parallel calls), arguments as an object where the stored string is JSON.
_LF_CALLS = ("list_transform(CAST(m.tool_calls AS JSON[]), lambda c: json_object('name', c->>'$.function.name', "
             "'arguments', CASE WHEN json_valid(c->>'$.function.arguments') THEN json(c->>'$.function.arguments') "
             "ELSE to_json(c->>'$.function.arguments') END))")


def _sharegpt_turns(f: _Features) -> str:
    if not f.extras:
        return f"list_transform(s.messages, lambda m: {{'from': {_SHAREGPT_ROLE}, 'value': m.content}})"
    plain = (f"json_merge_patch('{{}}', to_json({{'from': {_SHAREGPT_ROLE}, 'value': m.content, "
             "'reasoning': m.reasoning, 'tool_call_id': m.tool_call_id, 'name': m.name}))")
    calls = (f"CAST(CASE WHEN len({_LF_CALLS}) = 1 THEN CAST({_LF_CALLS}[1] AS VARCHAR) "
             f"ELSE CAST(to_json({_LF_CALLS}) AS VARCHAR) END AS VARCHAR)")
    call_turn = f"to_json({{'from': 'function_call', 'value': {calls}}})"
    both = f"CASE WHEN m.content <> '' OR m.reasoning IS NOT NULL THEN [{plain}, {call_turn}] ELSE [{call_turn}] END"
    return f"flatten(list_transform(s.messages, lambda m: CASE WHEN m.tool_calls IS NULL THEN [{plain}] ELSE {both} END))"


def _trl_columns(f: _Features) -> str:
    """TRL's forms: prompt/chosen/rejected message lists for pairs (the prompt ends where the source's did:
    meta prompt_turns), prompt/completion for single answers, and KTO's boolean as label."""
    n = "len(s.messages)"
    p = (f"coalesce(TRY_CAST(json_extract_string(s.meta, '$.prompt_turns') AS INTEGER), "
         f"CASE WHEN s.messages[-1].role = 'assistant' THEN {n} - 1 ELSE {n} END)")
    cols = [f"{_openai_turns(f's.messages[1:{p}]', f)} AS prompt"]
    if f.pairs:
        cols += [f"CASE WHEN s.rejected IS NOT NULL THEN {_openai_turns(f's.messages[{p} + 1:]', f)} END AS chosen",
                 f"CASE WHEN s.rejected IS NOT NULL THEN {_openai_turns(f's.rejected[{p} + 1:]', f)} END AS rejected"]
    if f.singles:
        cols.append(f"CASE WHEN s.rejected IS NULL THEN {_openai_turns(f's.messages[{p} + 1:]', f)} END AS completion")
    return ", ".join(cols)


def _row_sql(fmt: str, weighted: bool, f: _Features | None = None) -> str:
    """The SELECT list for one format; fixed SQL text only."""
    f = f or _Features()
    weight = f", {_WEIGHT} AS weight" if weighted else ""
    extra = (", s.tools AS tools" if f.tools and fmt == "openai" else
             ", CAST(s.tools AS VARCHAR) AS tools" if f.tools and fmt == "sharegpt" else "")
    if f.kto and fmt in ("openai", "sharegpt", "trl"):
        extra += ", s.kto_label AS label"
    if fmt == "openai":
        return f"{_openai_turns('s.messages', f)} AS messages{extra}{weight}"
    if fmt == "sharegpt":
        return f"{_sharegpt_turns(f)} AS conversations{extra}{weight}"
    if fmt == "trl":
        tools = ", s.tools AS tools" if f.tools else ""
        return f"{_trl_columns(f)}{tools}{extra}{weight}"
    if fmt == "alpaca":
        c = "list_filter(s.messages, lambda m: m.role <> 'system')"
        last_is_answer = f"{c}[-1].role = 'assistant'"
        q = f"(CASE WHEN {last_is_answer} THEN len({c}) - 1 ELSE len({c}) END)"
        return (f"coalesce({c}[{q}].content, '') AS instruction, '' AS input, "
                f"CASE WHEN {last_is_answer} THEN {c}[-1].content ELSE '' END AS output, {_SYSTEM} AS system, "
                f"list_transform(range(1, {q} - 1, 2), lambda i: [{c}[i].content, {c}[i + 1].content]) AS history"
                f"{weight}")
    # parquet / hf: the normalised sample with its provenance columns; JSON as text (Arrow's JSON extension
    # type is not readable by `datasets`), and plain {role, content} turns where no turn has more
    tools = ", CAST(s.tools AS VARCHAR) AS tools" if f.tools else ""
    kto = ", s.kto_label AS kto_label" if f.kto else ""
    return (f"s.id AS sample_id, d.name AS source, c.category AS category, {_parquet_turns('s.messages', f)} AS "
            f"messages, {_parquet_turns('s.rejected', f)} AS rejected, s.n_tokens AS n_tokens{tools}{kto}{weight}")


def _parquet_turns(expr: str, f: _Features) -> str:
    if not f.extras:
        return f"list_transform({expr}, lambda m: {{'role': m.role, 'content': m.content}})"
    return (f"CAST({expr} AS STRUCT(role VARCHAR, content VARCHAR, reasoning VARCHAR, tool_calls VARCHAR, "
            "tool_call_id VARCHAR, name VARCHAR)[])")


def _copy(con: duckdb.DuckDBPyConnection, fmt: str, split: str, path: Path, weighted: bool) -> int:
    select = (f"SELECT {_row_sql(fmt, weighted, _features(con))} FROM mix_sel m JOIN samples s ON s.id = m.sample_id "
              "JOIN mix_cand c ON c.id = m.sample_id JOIN datasets d ON d.dataset_id = s.dataset_id "
              "WHERE m.split = ? ORDER BY m.pos")
    options = "FORMAT JSON" if fmt in _JSONL_FORMATS else "FORMAT PARQUET, COMPRESSION ZSTD"
    path.parent.mkdir(parents=True, exist_ok=True)
    # COPY takes no parameters, so the split goes in through a one-row temp table.
    con.execute("CREATE OR REPLACE TEMP TABLE _mx_split AS SELECT CAST(? AS VARCHAR) AS split", [split])
    select = select.replace("m.split = ?", "m.split = (SELECT split FROM _mx_split)")
    con.execute(f"COPY ({select}) TO '{_sql_path(path)}' ({options})")
    return int(con.execute("SELECT count(*) FROM mix_sel WHERE split = ?", [split]).fetchone()[0])


def _sql_path(path: Path) -> str:
    """Our own temporary path as a SQL string literal (quotes doubled)."""
    return str(path).replace("'", "''")


def _write_hf(folder: Path, parquet_files: dict[str, Path], fingerprint: str) -> None:
    """A DatasetDict saved with save_to_disk; fingerprints fixed so the folder's bytes are reproducible."""
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict
    from datasets.table import InMemoryTable

    parts = {}
    for split, path in parquet_files.items():
        table = pq.read_table(path)
        parts[split] = Dataset(InMemoryTable(table), fingerprint=hashlib.sha256(
            f"{fingerprint}:{split}".encode()).hexdigest()[:16])
    DatasetDict(parts).save_to_disk(str(folder))


def _signal_columns(con: duckdb.DuckDBPyConnection, comp: Composition) -> tuple[str, str, dict[str, Any]]:
    """The recipe's export.signals as a TEMP table mix_signals (sample_id, v0, v1, ...) of the selected samples:
    (select list, join, {name: kind, runs, description} for the manifest)."""
    from core.signals.registry import find_on

    names = comp.recipe.export.signals
    if not names:
        return "", "", {}
    con.execute("CREATE OR REPLACE TEMP TABLE mix_signals AS SELECT DISTINCT sample_id FROM mix_sel")
    record = {}
    for i, name in enumerate(names):
        try:
            signal = find_on(con, name, comp.dataset_ids)
        except UserError as exc:
            raise RecipeError("export.signals", str(exc)) from None
        bound = signal.bind(con, comp.dataset_ids)
        con.execute(f"CREATE OR REPLACE TEMP TABLE mix_signals AS SELECT m.*, v.value AS v{i} FROM mix_signals m "
                    f"LEFT JOIN ({bound.sql}) v ON v.sample_id = m.sample_id", bound.params)
        record[name] = {"kind": signal.kind, "runs": list(bound.runs), "description": signal.description,
                        "column": name}
    # Column names are the signal names, quoted; a double quote in a name is doubled (never user SQL).
    select = "".join(f', g.v{i} AS "{n.replace(chr(34), chr(34) * 2)}"' for i, n in enumerate(names))
    return select, " LEFT JOIN mix_signals g ON g.sample_id = m.sample_id", record


def _provenance(con: duckdb.DuckDBPyConnection, path: Path, signals: tuple[str, str] = ("", "")) -> None:
    con.execute(
        "COPY (SELECT m.split, row_number() OVER (PARTITION BY m.split ORDER BY m.pos) - 1 AS row, m.sample_id, "
        f"d.name AS source, s.source_id, s.row_idx, c.category, m.copy, c.weight{signals[0]} FROM mix_sel m "
        "JOIN samples s ON s.id = m.sample_id JOIN mix_cand c ON c.id = m.sample_id "
        f"JOIN datasets d ON d.dataset_id = s.dataset_id{signals[1]} ORDER BY m.split, m.pos) "
        f"TO '{_sql_path(path)}' (FORMAT PARQUET, COMPRESSION ZSTD)")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_version() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                timeout=5).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                                    capture_output=True, text=True, timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"assay_version": CODE_VERSION, "git_commit": commit, "git_dirty": dirty}


def _manifest(store: Store, comp: Composition, files: list[dict[str, Any]], splits: dict[str, int]) -> dict[str, Any]:
    recipe = comp.recipe
    src_cols = ["dataset", "license", "synthetic", "is_eval", "origin", "loaded_at", "ingest_run_id", "n_total",
                "n_after_filters", "n_selected", "n_unique", "tokens_selected", "n_validation"]
    return {
        "format": "assay-mixture-export/1",
        "recipe": recipe.to_dict(),
        "recipe_fingerprint": recipe.fingerprint(),
        "seed": recipe.seed,
        "store": {"path": str(store.path.resolve()), "schema_version": store.schema_version()},
        "code": git_version(),
        "totals": {"samples": comp.n_selected, "tokens": comp.n_tokens, **splits},
        "sources": json.loads(comp.sources[src_cols].to_json(orient="records")),
        "filters": json.loads(comp.filter_counts.to_json(orient="records")),
        "plan": {"steps": comp.plan.steps, "issues": comp.plan.issues,
                 "cells": json.loads(comp.plan.cells.to_json(orient="records"))},
        "dedup_run": comp.dedup_run,
        "contamination_runs": comp.contamination_runs,
        **({"signal_runs": comp.signal_runs} if comp.signal_runs else {}),
        **({"signals": comp.exported_signals} if comp.exported_signals else {}),
        "selection": comp.selection_notes,
        "warnings": [w.to_dict() for w in comp.warnings],
        "files": files,
    }


def _write_files(con: duckdb.DuckDBPyConnection, comp: Composition, tmp: Path, formats: list[str],
                 progress: Progress | None) -> dict[str, int]:
    recipe = comp.recipe
    weighted = recipe.weights is not None
    splits = {s: int(con.execute("SELECT count(*) FROM mix_sel WHERE split = ?", [s]).fetchone()[0]) for s in _SPLITS}
    present = [s for s in _SPLITS if splits[s] or s == "train"]
    steps = [(f, s) for f in formats if f != "hf" for s in present]
    parquet_for_hf: dict[str, Path] = {}
    for k, (fmt, split) in enumerate(steps):
        ext = "parquet" if fmt == "parquet" else "jsonl"
        path = tmp / fmt / f"{split}.{ext}"
        _copy(con, fmt, split, path, weighted)
        if fmt == "parquet":
            parquet_for_hf[split] = path
        if progress:
            progress(f"writing {fmt}/{split}", 0.5 + 0.4 * (k + 1) / max(len(steps), 1))
    if "hf" in formats:
        if not parquet_for_hf:
            scratch = tmp / ".hf-parquet"
            for split in present:
                parquet_for_hf[split] = scratch / f"{split}.parquet"
                _copy(con, "parquet", split, parquet_for_hf[split], weighted)
        _write_hf(tmp / "hf", parquet_for_hf, recipe.fingerprint())
        shutil.rmtree(tmp / ".hf-parquet", ignore_errors=True)
    select, join, comp.exported_signals = _signal_columns(con, comp)
    _provenance(con, tmp / "provenance.parquet", (select, join))
    return {s: splits[s] for s in _SPLITS}


def _staging(out: Path, run_id: int) -> Path:
    """The run's staging folder beside `out` (hidden; named from the run id, so a cleaner can find it)."""
    return out.parent / f".{out.name}.partial-run{run_id}"


def _replaced(out: Path, run_id: int) -> Path:
    """Where an overwritten export waits while the new one is renamed into place."""
    return out.parent / f".{out.name}.old-run{run_id}"


def clean_interrupted_exports(store: Store) -> list[Path]:
    """Remove the staging folders of export runs whose process is gone (killed, crashed); where one was
    killed midway through replacing an export, the old export is put back. Returns the folders removed."""
    removed = []
    for run in store.interrupted_runs("mix-export").itertuples():
        try:
            out = Path(json.loads(run.params)["out"])
        except (TypeError, ValueError, KeyError):
            continue
        staging, old = _staging(out, int(run.run_id)), _replaced(out, int(run.run_id))
        if old.is_dir() and not out.exists():
            os.replace(old, out)  # killed between the two renames: the previous export comes back
        for folder in (staging, old):
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed


def _finalise(tmp: Path, out: Path, overwrite: bool, run_id: int) -> None:
    if out.exists():
        if not overwrite:
            raise ExportExistsError(f"{out} already exists; choose another folder or overwrite it")
        old = _replaced(out, run_id)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def export_mixture(store: Store, recipe: Recipe, out_dir: str | Path, *, formats: list[str] | None = None,
                   overwrite: bool = False, allow_shortfall: bool | None = None,
                   progress: Progress | None = None) -> ExportResult:
    """Compose the recipe and write it to `out_dir` (a new folder); a recorded `mix-export` run."""
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not overwrite:
        raise ExportExistsError(f"{out} already exists; choose another folder or pass --overwrite")
    formats = list(dict.fromkeys(formats or recipe.export.formats))
    allow = recipe.allow_shortfall if allow_shortfall is None else allow_shortfall
    clean_interrupted_exports(store)
    with store.run("mix-export", {"recipe": recipe.to_dict(), "out": str(out), "formats": formats},
                   sample_filter=f"mixture {recipe.name}: {', '.join(recipe.datasets)}") as run:
        run_id = run.run_id
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = _staging(out, run_id)
        try:
            comp, manifest, text = _export_into(store, recipe, tmp, formats, allow, run_id, out, progress)
            _finalise(tmp, out, overwrite, run_id)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        manifest_sha = hashlib.sha256(text.encode()).hexdigest()
        record_export(store, run_id, recipe, out, formats, comp.n_selected, comp.n_tokens, manifest_sha, text)
        run.finish(comp.n_selected)
    if progress:
        progress("done", 1.0)
    return ExportResult(out, run_id, manifest["files"], manifest, comp)


def _export_into(store: Store, recipe: Recipe, tmp: Path, formats: list[str], allow: bool, run_id: int, out: Path,
                 progress: Progress | None) -> tuple[Composition, dict[str, Any], str]:
    """Compose and write the export's files into the staging folder; returns (composition, manifest, its text)."""
    tmp.mkdir()
    with store.connect() as con, memory_limit(con, EXPORT_MEMORY_LIMIT):
        comp = compose_on(con, store, recipe, with_examples=False, progress=progress)
        if comp.plan.issues and not allow:
            raise MixturePlanError("The recipe's targets cannot be met:\n- " + "\n- ".join(comp.plan.issues)
                                   + "\n(set allow_shortfall: true to export what is available)")
        splits = _write_files(con, comp, tmp, formats, progress)
    (tmp / "recipe.yaml").write_text(recipe.to_yaml())
    charts = write_charts(comp.composition, tmp / "charts")
    files = _hash_files(tmp)
    manifest = _manifest(store, comp, files, splits)
    rel_charts = [str(p.relative_to(tmp)) for p in charts]
    (tmp / "datasheet.md").write_text(datasheet_markdown(manifest, rel_charts))
    manifest["files"] = _hash_files(tmp)
    text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"
    (tmp / "manifest.json").write_text(text)
    (tmp / "run.json").write_text(json.dumps({"run_id": run_id, "exported_at": str(now_utc()),
                                              "out_dir": str(out)}, indent=2) + "\n")
    return comp, manifest, text


def _hash_files(folder: Path) -> list[dict[str, Any]]:
    skip = {"manifest.json", "run.json"}
    return [{"path": str(p.relative_to(folder)), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip]


def zip_export(out_dir: str | Path) -> bytes:
    """The export folder as zip bytes with fixed timestamps (same folder, same zip)."""
    folder = Path(out_dir)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo(f"{folder.name}/{path.relative_to(folder)}", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
    return buffer.getvalue()


__all__ = ["ExportExistsError", "ExportResult", "MixturePlanError", "RecipeError", "clean_interrupted_exports",
           "export_mixture", "sha256_file", "zip_export"]

