"""Drawing a 2,000,000-point map: Embedding Atlas (every point) against plotly (its point budget), in one run.

The map is a real map in a real DuckDB store: real GSM8K train questions (with a few hostile texts),
cycled to N samples, a projection of synthetic clustered 2-D points, a cluster run with titles, and the
map row, so the page reads it as it reads any map. For each drawing it measures, on the server, the
time to produce the page's data (load the points, build the atlas table or the plotly figure, serialise
it as Streamlit does); the bytes that go to the browser (Streamlit's websocket messages, counted in
Chromium); and the time from opening the page to the first frame with the points drawn, in headless
Debian Chromium. The load average goes with every figure: the machine is shared.

    .venv/bin/python -m bench.map_draw [--points 2000000] [--plotly 200000,400000]  -> bench/results/map_draw.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import peak_rss_mb, shared_dir, write_results
from core.store.database import Store

HOSTILE = ["<img src=x onerror=alert(1)> **bold** [link](http://example.com) $x^2$",
           "<script>alert('map')</script> :red[red] ![img](http://example.com/a.png)"]
CENTRES = 40


def build_store(path: Path, n: int, seed: int = 0) -> tuple[Store, int]:
    """A store holding one dataset of `n` samples (real texts, cycled) and one map of every sample."""
    from core.ingest.importer import ingest_records
    from core.maps.points import record_map

    store = Store(path)
    with open(shared_dir() / "gsm8k" / "train.jsonl", encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines if line.strip()]
    records[:len(HOSTILE)] = [{**records[i], "question": text} for i, text in enumerate(HOSTILE)]
    ingest_records(store, records, name="gsm8k-big", shape="qa", license="MIT")
    with store.transaction() as con:
        base = con.execute("SELECT count(*), max(id) FROM samples").fetchone()
        k, top = int(base[0]), int(base[1])
        con.execute("CREATE TEMP TABLE base AS SELECT *, row_number() OVER (ORDER BY id) - 1 AS rn FROM samples")
        # The copies carry no raw record (it is not read here) so that 2M samples stay a small file.
        con.execute("INSERT INTO samples BY NAME SELECT * EXCLUDE (id, source_id, row_idx, rn, i, raw), "
                    "? + 1 + g.i AS id, b.source_id || '#' || g.i AS source_id, ? + g.i AS row_idx FROM range(?) g(i) "
                    "JOIN base b ON b.rn = g.i % ?", [top, k, max(n - k, 0), k])
        con.execute("UPDATE datasets SET n_samples = ?", [max(n, k)])
    ids = store.query_df("SELECT id FROM samples ORDER BY id").id.to_numpy()
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 8, size=(CENTRES, 2))
    which = rng.integers(0, CENTRES, len(ids))
    xy = (centres[which] + rng.normal(0, 1, size=(len(ids), 2))).astype(np.float32)
    embed_run = store.start_run("embed", params={"synthetic": True})
    proj_run = store.start_run("project", params={"method": "pca", "synthetic": True})
    cluster_run = store.start_run("cluster", params={"method": "kmeans", "k": CENTRES})
    points = pd.DataFrame({"sample_id": ids, "x": xy[:, 0], "y": xy[:, 1], "cluster": which.astype(np.int32)})
    summary = points.groupby("cluster").agg(size=("sample_id", "size"), x=("x", "mean"), y=("y", "mean")).reset_index()
    summary["label"] = [f"topic {c}" for c in summary.cluster]
    with store.transaction() as con:
        con.execute("INSERT INTO embedding_runs (run_id, model_key, text_field, backend, n_computed) "
                    "VALUES (?, 'synthetic', 'instruction', 'none', 0)", [embed_run])
        con.register("points", points)
        con.execute("INSERT INTO projections SELECT ?, sample_id, x, y FROM points", [proj_run])
        con.execute("INSERT INTO clusters SELECT ?, sample_id, cluster FROM points", [cluster_run])
        con.register("summary", summary)
        con.execute("INSERT INTO cluster_labels SELECT ?, cluster, size, label, [label], NULL, x, y FROM summary",
                    [cluster_run])
        for run in (embed_run, proj_run, cluster_run):
            store.finish_run(run, n_samples=len(ids), con=con)
    info = record_map(store, ["gsm8k-big"], embed_run, proj_run, cluster_run, name=f"{len(ids):,} points")
    return store, info.map_id


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, round(time.perf_counter() - wall, 3), round(time.process_time() - cpu, 3)


def server_side(store: Store, map_id: int, budgets: list[int]) -> dict[str, Any]:
    """The page's data, built as the page builds it: points, then the atlas table or the plotly figure,
    serialised as Streamlit serialises them (Arrow IPC for a component, plotly JSON for a chart)."""
    import plotly.io as pio
    from streamlit.components.v1.component_arrow import _convert_df_to_component_arrow_bytes

    from core.maps.atlas import atlas_table, selected_ids
    from core.maps.cluster import cluster_table
    from core.maps.figures import map_figure
    from core.maps.points import get_map, load_atlas_points, load_points

    info = get_map(store, map_id)
    labels = cluster_table(store, info.cluster_run_id)
    # The atlas's points as the page loads them: ids, x, y and the colour only (no text past 250,000 points).
    lean, lean_s, lean_cpu = _timed(lambda: load_atlas_points(store, map_id))
    table, atlas_s, atlas_cpu = _timed(lambda: atlas_table(lean, color="cluster", labels=labels))
    payload, ser_s, ser_cpu = _timed(lambda: _convert_df_to_component_arrow_bytes(table.frame))
    out: dict[str, Any] = {"points": len(lean)}
    out["atlas"] = {"load_atlas_points_s": lean_s, "load_atlas_points_cpu_s": lean_cpu, "build_s": atlas_s,
                    "build_cpu_s": atlas_cpu, "serialise_s": ser_s, "serialise_cpu_s": ser_cpu,
                    "server_s": round(lean_s + atlas_s + ser_s, 3), "arrow_bytes": len(payload),
                    "text_chars": table.text_chars, "loadavg": _load()}
    # plotly's points as the page loads them (with the hover text it shows).
    points, load_s, load_cpu = _timed(lambda: load_points(store, map_id))
    out |= {"load_points_s": load_s, "load_points_cpu_s": load_cpu, "loadavg": _load()}
    predicate = '"x" BETWEEN 0 AND 8 AND "y" BETWEEN -4 AND 4'
    ids, sel_s, sel_cpu = _timed(lambda: selected_ids(table, predicate))
    out["atlas"]["selection"] = {"predicate": predicate, "ids": len(ids), "seconds": sel_s, "cpu_s": sel_cpu}
    print("server atlas", out["atlas"], flush=True)
    out["plotly"] = []
    for budget in budgets:
        (fig, fig_info), fig_s, fig_cpu = _timed(lambda b=budget: map_figure(points, color="cluster", labels=labels, budget=b))
        text, json_s, json_cpu = _timed(lambda f=fig: pio.to_json(f, validate=False))
        out["plotly"].append({"budget": budget, "shown": fig_info.shown, "figure_s": fig_s, "figure_cpu_s": fig_cpu,
                              "json_s": json_s, "json_cpu_s": json_cpu, "json_bytes": len(text), "loadavg": _load()})
        print("server plotly", out["plotly"][-1], flush=True)
    return out


# Software WebGPU (SwiftShader through Vulkan) in headless Chromium: the atlas draws with WebGPU only.
ATLAS_CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                       "--disable-sync", "--no-first-run", "--enable-unsafe-webgpu", "--enable-unsafe-swiftshader",
                       "--use-angle=swiftshader", "--enable-features=Vulkan", "--use-vulkan=swiftshader"]
# Pixels of the atlas canvas that are not background (the atlas renders before toDataURL returns).
DRAWN_PIXELS = """c => new Promise(done => { const img = new Image(); img.onload = () => {
  const o = document.createElement('canvas'); o.width = img.width; o.height = img.height;
  const g = o.getContext('2d'); g.drawImage(img, 0, 0); const d = g.getImageData(0, 0, o.width, o.height).data;
  let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235)) n++;
  done(n); }; img.onerror = () => done(-1); img.src = c.toDataURL(); })"""
PLOTLY_POINTS = """() => { const gd = document.querySelector('.js-plotly-plot');
  if (!gd || !gd._fullData || !gd.querySelector('.nsewdrag')) return 0;
  return gd._fullData.reduce((s, t) => s + (t.type === 'scattergl' && t.x ? t.x.length : 0), 0); }"""


def atlas_frame(page: Any) -> Any:
    return next((f for f in page.frames if "embedding_atlas" in f.url), None)


def wait_atlas_drawn(page: Any, timeout: float, min_pixels: int = 2000, seen: dict | None = None) -> int:
    """Poll until the atlas's canvas shows points; the number of drawn pixels (0 on timeout). `seen` gets
    the seconds until the component's frame appeared and until its canvas did."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        frame = atlas_frame(page)
        if seen is not None and frame is not None:
            seen.setdefault("component_frame_s", round(time.monotonic() - start, 1))
        if frame is not None and frame.locator("canvas").count():
            if seen is not None:
                seen.setdefault("canvas_s", round(time.monotonic() - start, 1))
            try:
                pixels = frame.locator("canvas").first.evaluate(DRAWN_PIXELS)
            except Exception:  # noqa: BLE001 - the frame may be replaced while it loads
                pixels = 0
            if pixels >= min_pixels:
                return pixels
        page.wait_for_timeout(250)
    return 0


def _counters(context: Any, page: Any) -> dict[str, float]:
    """Bytes the page received: Streamlit's websocket frames, and HTTP bodies (page and component frame)."""
    seen = {"ws_bytes": 0.0, "http_bytes": 0.0}
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")

    def frame(event: dict) -> None:
        data = event["response"]["payloadData"]
        seen["ws_bytes"] += len(data) * 3 / 4 if event["response"]["opcode"] == 2 else len(data)

    cdp.on("Network.webSocketFrameReceived", frame)
    cdp.on("Network.loadingFinished", lambda e: seen.__setitem__("http_bytes", seen["http_bytes"] + e["encodedDataLength"]))
    return seen


def browser_side(store_path: Path, n: int, big_budget: int | None, timeout: float) -> list[dict[str, Any]]:
    from playwright.sync_api import sync_playwright

    from tests.browser_support import CHROMIUM, _stop, start_workbench

    out: list[dict[str, Any]] = []
    log = Path(tempfile.gettempdir()) / f"map_draw_streamlit_{os.getpid()}.log"
    proc, url = start_workbench(store_path, log)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ATLAS_CHROMIUM_ARGS)
            for drawer in ("atlas", "plotly"):
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = context.new_page()
                seen = _counters(context, page)
                start = time.monotonic()
                page.goto(f"{url}/Map?draw={drawer}")
                row: dict[str, Any] = {"drawer": drawer, "points": n}
                if drawer == "atlas":
                    pixels = wait_atlas_drawn(page, timeout, seen=row)
                    row |= {"first_frame_s": round(time.monotonic() - start, 2) if pixels else None,
                            "drawn_pixels": pixels}
                    frame = atlas_frame(page)
                    row["atlas_says_all_points"] = bool(frame and frame.get_by_text(f"{n:,} points").count())
                else:
                    try:
                        page.wait_for_function(PLOTLY_POINTS, timeout=timeout * 1000, polling=250)
                        row["first_frame_s"] = round(time.monotonic() - start, 2)
                        row["drawn_points"] = page.evaluate(PLOTLY_POINTS)
                    except Exception as exc:  # noqa: BLE001 - a timeout is a result here
                        row["error"] = str(exc).splitlines()[0]
                row |= {k: int(v) for k, v in seen.items()} | {"loadavg": _load()}
                page.screenshot(path=str(RESULT_DIR / f"map_draw_{drawer}.png"))
                if drawer == "plotly" and big_budget and "error" not in row:
                    row["bigger"] = _plotly_budget(page, seen, big_budget, timeout)
                out.append(row)
                print("browser", row, flush=True)
                context.close()
            browser.close()
    finally:
        _stop(proc)
        proc.log_file.close()
    return out


def _plotly_budget(page: Any, seen: dict[str, float], budget: int, timeout: float) -> dict[str, Any]:
    """Raise the plotly map's point budget on the page and time the redraw (does plotly survive it?)."""
    before = dict(seen)
    box = page.get_by_role("spinbutton", name="Point budget")
    box.fill(str(budget))
    start = time.monotonic()
    box.press("Enter")
    want = f"() => ({PLOTLY_POINTS})() > {min(budget, 10**9) * 0.9}"
    row: dict[str, Any] = {"budget": budget}
    try:
        page.wait_for_function(want, timeout=timeout * 1000, polling=500)
        row |= {"first_frame_s": round(time.monotonic() - start, 2), "drawn_points": page.evaluate(PLOTLY_POINTS)}
    except Exception as exc:  # noqa: BLE001 - a timeout or a crashed tab is a result here
        row["error"] = str(exc).splitlines()[0]
    row |= {k: int(seen[k] - before[k]) for k in seen} | {"loadavg": _load()}
    return row


RESULT_DIR = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--plotly", default="200000,1000000", help="plotly point budgets for the server figures")
    parser.add_argument("--store", type=Path, help="reuse (or build at) this store path")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a first frame")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    budgets = [int(b) for b in args.plotly.split(",") if b]
    RESULT_DIR.mkdir(parents=True, exist_ok=True)
    path = args.store or Path(tempfile.mkdtemp(prefix="map_draw_")) / "store.duckdb"
    if path.exists():
        store = Store(path)
        from core.maps.points import list_maps

        map_id, build_s = int(list_maps(store).map_id[0]), None
    else:
        (store, map_id), build_s, _ = _timed(lambda: build_store(path, args.points))
    n = int(store.query_df("SELECT count(*) AS n FROM projections p JOIN maps m ON m.projection_run_id = p.run_id "
                           "WHERE m.map_id = ?", [map_id]).n[0])
    results: dict[str, Any] = {"points": n, "store_build_s": build_s, "loadavg_start": _load()}
    results["server"] = server_side(store, map_id, budgets)
    if not args.no_browser:
        results["browser"] = browser_side(path, n, max(budgets) if budgets else None, args.timeout)
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    results["loadavg_end"] = _load()
    print(write_results("map_draw", results))


if __name__ == "__main__":
    main()
