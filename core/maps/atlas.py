"""Every point of a map in the browser with Apple's Embedding Atlas (PyPI `embedding-atlas`), and its
selections turned back into sample ids.

The atlas gets one table: x, y (float32), the colour column as a category and the start of each text
for its tooltip. It draws with WebGL over DuckDB-WASM in the browser, so millions of points stay
interactive; what it returns is the selection as a SQL predicate over that table. The predicate comes
from the browser (a user can type any SQL into the atlas's own "SQL predicates" view), so it is never
spliced into a query on the store: `selected_ids` evaluates it in a sandbox, an in-memory DuckDB that
holds only the table the browser was sent, with file access and extension loading off, configuration
locked and a time limit; the rows it matches map back to sample ids on the server.

    from core.maps.atlas import atlas_table, selected_ids
    table = atlas_table(points, color="cluster")            # what the component is given
    ids = selected_ids(table, '"x" BETWEEN 0 AND 1')       # sample ids of the matching rows

The package's Streamlit component loads DuckDB-WASM from cdn.jsdelivr.net and draws with WebGPU only
where the device offers 16-bit floats in shaders; `component_dir` builds a copy of it (once, in the
cache folder) that loads the same DuckDB-WASM build from the package's own files instead (the map works
offline and no page fetches code from a third party) and keeps its density buffers in 32-bit floats
(so software WebGPU, as in headless Chromium, draws it too). A browser without WebGPU at all shows the
atlas's own "WebGPU is unavailable" notice: plotly stays one click away.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import InputError
from core.maps.embed import cache_dir
from core.maps.points import PREVIEW_CHARS

ATLAS_VERSION = "0.26.0"  # the component is patched below: other versions are refused, not guessed at
TEXT_BYTES = 64_000_000  # tooltip text for all points together: at 2M points about 32 characters each
NUMERIC_BINS = 8  # a numeric colour column becomes this many quantile ranges (the atlas colours categories)
PREDICATE_CHARS = 100_000
PREDICATE_SECONDS = 20.0
ROW_INDEX = "__row_index__"  # the row number the component adds to its table (0-based, in order sent)
_CDN = "https://cdn.jsdelivr.net/npm/${Pse}@${Fse}/dist/"
# What component_dir changes in the component's script, each found exactly once or the atlas is not used.
_PATCHES = (
    # DuckDB-WASM from the package's own files (a worker started from a blob: URL resolves nothing
    # relative, so the address is made absolute from the script's own).
    (_CDN, '${new URL("./duckdb/", import.meta.url).href}'),
    # The density shader's two blur buffers in f32 instead of f16, so that the WebGPU device need not
    # offer "shader-f16" (software WebGPU, SwiftShader, and many integrated GPUs do not): the second
    # buffer doubles in size, the first aliases a u32 buffer of one element per cell and fits as it is.
    ("[`shader-f16`,...e]", "[...e]"),
    ("(e,t,n)=>e*t*n*2)", "(e,t,n)=>e*t*n*4)"),
)


@dataclass
class AtlasTable:
    """The table sent to the browser, the sample id of each of its rows, and how it was made."""

    frame: pd.DataFrame
    ids: np.ndarray
    color: str | None
    text_chars: int
    labels: list[dict] = field(default_factory=list)

    @property
    def message(self) -> str:
        hover = (f"the first {self.text_chars} characters of each text" if self.text_chars
                 else "each point's colour; select points to read their texts")
        return f"showing all {len(self.frame):,} points (Embedding Atlas); hover shows {hover}"


# ---- the component -----------------------------------------------------------------------------


def available() -> bool:
    """Whether the pinned embedding-atlas is installed (the page falls back to plotly otherwise)."""
    try:
        from embedding_atlas.version import __version__
    except ImportError:
        return False
    return __version__ == ATLAS_VERSION


def component_dir(cache: Path | None = None) -> Path:
    """The offline copy of the package's Streamlit component (built once): the component's files, the
    package's DuckDB-WASM build beside them, and the CDN address in the script replaced by that folder."""
    import embedding_atlas

    package = Path(embedding_atlas.__file__).parent
    target = (cache or cache_dir()) / f"embedding-atlas-{ATLAS_VERSION}-offline-f32"
    if (target / "index.html").is_file():
        return target
    work = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(package / "widget_static" / "streamlit", work)
    duck = work / "assets" / "duckdb"
    duck.mkdir()
    bundle = package / "static" / "assets"
    for stem, name in (("duckdb-eh-", "duckdb-eh.wasm"), ("duckdb-mvp-", "duckdb-mvp.wasm"),
                       ("duckdb-browser-eh.worker-", "duckdb-browser-eh.worker.js"),
                       ("duckdb-browser-mvp.worker-", "duckdb-browser-mvp.worker.js")):
        found = sorted(bundle.glob(stem + "*"))
        if len(found) != 1:
            raise RuntimeError(f"embedding-atlas {ATLAS_VERSION}: expected one {stem}* in {bundle}")
        _link_or_copy(found[0], duck / name)
    scripts = [p for p in (work / "assets").glob("index-*.js") if _CDN in p.read_text(encoding="utf-8")]
    if len(scripts) != 1:
        raise RuntimeError(f"embedding-atlas {ATLAS_VERSION}: the DuckDB-WASM address was not found once")
    code = scripts[0].read_text(encoding="utf-8")
    for old, new in _PATCHES:
        if code.count(old) != 1:
            raise RuntimeError(f"embedding-atlas {ATLAS_VERSION}: {old[:40]!r} was not found once in its script")
        code = code.replace(old, new)
    shader_start = code.index("enable f16;")
    shader_end = re.compile(r"(?<!\\)`").search(code, shader_start).start()  # the template literal's end
    shader = code[shader_start:shader_end]
    code = code[:shader_start] + shader.replace("enable f16;", "").replace("array<f16>", "array<f32>").replace(
        "f16(", "f32(") + code[shader_end:]
    scripts[0].write_text(code, encoding="utf-8")
    try:
        work.rename(target)
    except OSError:  # another process built it first
        shutil.rmtree(work, ignore_errors=True)
    return target


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


# ---- the table ---------------------------------------------------------------------------------


def _quantile_codes(values: pd.Series) -> pd.Categorical:
    """A numeric column as at most NUMERIC_BINS ordered ranges, "01: lo – hi"; missing is MISSING."""
    from core.maps.figures import MISSING

    v = pd.to_numeric(values, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    present = v[~np.isnan(v)]
    if not len(present):
        return _categorical(np.zeros(len(v), np.int8), [MISSING])
    edges = np.unique(np.quantile(present, np.linspace(0, 1, NUMERIC_BINS + 1)))
    names = ([f"{edges[0]:.4g}"] if len(edges) == 1 else
             [f"{i + 1:02d}: {edges[i]:.4g} – {edges[i + 1]:.4g}" for i in range(len(edges) - 1)])
    codes = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, len(names) - 1)
    codes[np.isnan(v)] = len(names)
    return _categorical(codes, [*names, MISSING])


def colour_values(points: pd.DataFrame, color: str) -> pd.Categorical:
    """The colour column as the categories the atlas colours by: categories as the plotly map names them
    (clusters "3: title", HDBSCAN noise "unclustered", missing "(none)"), numbers as quantile ranges.
    Labels are made once per distinct value, not per point (2M string operations take seconds)."""
    from core.maps.figures import _category_values, _is_numeric

    if color not in points:
        raise InputError(f"no column {color!r} to colour by")
    if _is_numeric(points[color]):
        return _quantile_codes(points[color])
    codes, distinct = pd.factorize(points[color], use_na_sentinel=False)
    values = pd.DataFrame({color: pd.array(distinct, dtype=points[color].dtype)})
    if color == "cluster" and "title" in points:  # one title per cluster: the first point's
        values["title"] = points["title"].groupby(codes).first().reindex(range(len(distinct))).to_numpy()
    names = _category_values(values, color)[0].to_numpy(object)
    return _categorical(*_fold(codes, names))


def _fold(codes: np.ndarray, names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Past MAX_CATEGORIES coloured values, the rarest fold into "other", as on the plotly map."""
    from core.maps.figures import MAX_CATEGORIES, MISSING, UNCLUSTERED

    label_codes, labels = pd.factorize(names)
    codes = label_codes[codes]
    counts = np.bincount(codes, minlength=len(labels))
    coloured = [i for i in np.argsort(-counts, kind="stable") if labels[i] not in (MISSING, UNCLUSTERED)]
    if len(coloured) <= MAX_CATEGORIES:
        return codes, np.asarray(labels, dtype=object)
    keep = np.zeros(len(labels), bool)
    keep[coloured[:MAX_CATEGORIES - 1]] = True
    keep[[i for i, name in enumerate(labels) if name in (MISSING, UNCLUSTERED)]] = True
    new_names = np.array([*labels[keep], "other"], dtype=object)
    remap = np.full(len(labels), len(new_names) - 1)
    remap[keep] = np.arange(keep.sum())
    return remap[codes], new_names


def _categorical(codes: np.ndarray, names: list[str] | np.ndarray) -> pd.Categorical:
    # Object categories: pandas 3's str categories become Arrow large_string dictionaries, which the
    # component's Arrow reader cannot decode ("Unrecognized type: LargeUtf8"); Streamlit downcasts
    # plain large_string columns but not dictionary values.
    return pd.Categorical.from_codes(np.asarray(codes, dtype=np.int32),
                                     categories=pd.Index(list(names), dtype=object)).remove_unused_categories()


def atlas_table(points: pd.DataFrame, *, color: str | None = "cluster", labels: pd.DataFrame | None = None,
                text_bytes: int = TEXT_BYTES) -> AtlasTable:
    """What the component is given for `points` (core.maps.points.load_points, possibly filtered): every point."""
    n = len(points)
    chars = min(PREVIEW_CHARS, text_bytes // n) if n else PREVIEW_CHARS
    data: dict[str, object] = {"x": points["x"].to_numpy(np.float32), "y": points["y"].to_numpy(np.float32)}
    if chars >= 8 and "preview" in points:
        import pyarrow as pa
        import pyarrow.compute as pc

        text = pc.utf8_slice_codeunits(pa.array(points["preview"], type=pa.large_string()), 0, chars)
        data["text"] = pd.arrays.ArrowExtensionArray(text.cast(pa.string()))  # see _categorical
    else:
        chars = 0
    name = None
    if color is not None:
        name = color if color not in ("x", "y", "text", ROW_INDEX) else f"colour: {color}"
        data[name] = colour_values(points, color)
    frame = pd.DataFrame(data)
    return AtlasTable(frame, points["id"].to_numpy(np.int64), name, chars, cluster_labels(labels))


def cluster_labels(labels: pd.DataFrame | None, limit: int = 40) -> list[dict]:
    """Cluster titles at their centres (core.maps.cluster.cluster_table), largest first, as the atlas's labels."""
    if labels is None or labels.empty:
        return []
    rows = labels[labels.cluster != -1].nlargest(limit, "size")
    # "content" is what the component (0.26) reads; "text" is what its documentation names.
    return [{"x": float(r.x), "y": float(r.y), "text": str(r.title), "content": str(r.title), "priority": int(r.size)}
            for r in rows.itertuples()]


# ---- selections --------------------------------------------------------------------------------

_SANDBOX = {"enable_external_access": False, "autoinstall_known_extensions": False,
            "autoload_known_extensions": False, "threads": 1, "memory_limit": "1GB"}


def selected_ids(table: AtlasTable, predicate: str | None) -> list[int]:
    """Sample ids of the rows of `table` that the atlas's selection `predicate` matches (none for none).
    InputError when the predicate is not one SQL condition over the table or takes too long."""
    if predicate is None or not str(predicate).strip():
        return []
    predicate = str(predicate)
    if len(predicate) > PREDICATE_CHARS:
        raise InputError(f"the map's selection is {len(predicate):,} characters of SQL; at most {PREDICATE_CHARS:,}")
    rows = _matching_rows(table.frame, predicate)
    rows = rows[(rows >= 0) & (rows < len(table.ids))]  # whatever the SQL returned, only this map's rows
    return sorted(set(table.ids[rows].tolist()))


def _matching_rows(frame: pd.DataFrame, predicate: str) -> np.ndarray:
    import duckdb

    sql = f"SELECT {ROW_INDEX} FROM dataframe WHERE ({predicate}\n)"
    con = duckdb.connect(":memory:", config=dict(_SANDBOX))
    try:
        con.register("dataframe", frame.assign(**{ROW_INDEX: np.arange(len(frame), dtype=np.int64)}))
        con.execute("SET lock_configuration = true")
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as exc:
            raise InputError(f"the map's selection is not a SQL condition: {_first_line(exc)}") from None
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise InputError("the map's selection must be one SQL condition over the map's columns")
        timer = threading.Timer(PREDICATE_SECONDS, con.interrupt)
        timer.start()
        try:
            out = con.execute(sql).fetchnumpy()[ROW_INDEX]
        except duckdb.InterruptException:
            raise InputError(f"the map's selection took over {PREDICATE_SECONDS:.0f} s to evaluate") from None
        except duckdb.Error as exc:
            raise InputError(f"the map's selection could not be evaluated: {_first_line(exc)}") from None
        finally:
            timer.cancel()
    finally:
        con.close()
    return np.asarray(pd.to_numeric(pd.Series(out), errors="coerce").dropna(), dtype=np.int64)


def _first_line(exc: Exception) -> str:
    return re.sub(r"\s+", " ", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)[:200]
