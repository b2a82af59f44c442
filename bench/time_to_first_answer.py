"""Time to first answer from a cold store: what a researcher waits for on a fresh machine, measured through
the same core functions the pages call (embeddings included, the ONNX export included).

Parts (each in a fresh process, in a fresh folder: new DuckDB file, empty embedding cache, no ONNX export):
  noise          run_noise on hate-offensive-crowd (24,783 tweets), every method, votes as the label source
                 (as the Noise page's "Find noisy labels")                              target < 180 s
  contamination  check_contamination of gsm8k-train against the three demo eval sets, n-gram and embedding
                 methods (every method but Min-K%), as the Contamination page          target < 90 s
  map            make_map of 100,000 distinct texts from ../shared/datasets, UMAP + HDBSCAN
                 (as the Map page's "Embed, project and cluster")                      target < 600 s

Loading the data into the store is timed apart (it is not part of the answer). With --compare torch,
after the answer, today's torch path embeds the same texts into a second cold store (the methods after
the embedding are the same work whichever path made the vectors, so today's total is that torch embed
time plus this run's non-embedding time); for the map the torch rate is measured on --torch-sample texts
and extrapolated (said so in the results). Load average and CPU seconds (this process and its workers)
are recorded with every figure: the machine is shared.

    .venv/bin/python -m bench.time_to_first_answer [--only noise|contamination|map] [--quick] [--compare torch]
        -> bench/results/time_to_first_answer.json (--quick: time_to_first_answer-quick.json)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, peak_rss_mb, shared_dir, write_results

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TARGETS = {"noise": 180.0, "contamination": 90.0, "map": 600.0}
TODAY = {  # the figures the issue (17) reports for the torch default, and what this repo measured before
    "noise": "7.3 min embedding alone (issue 17), before any method ran",
    "contamination": "3.7 min (issue 17)",
    "map": "no earlier end-to-end figure: bench/results/map_scale.json has 103 s for k-NN + UMAP + HDBSCAN + labels "
           "of 100,000 synthetic vectors (no embedding); embedding 100,000 texts at the torch rate of "
           "bench/results/embed_throughput.json adds the rest",
}
EVAL_SETS = ("gsm8k-test", "mt-bench", "arena-hard")
VOTES = "votes:hate_speech,offensive_language,neither"


# ---- measuring -----------------------------------------------------------------------------------


class LoadSampler:
    """The 1-minute load average every few seconds while a part runs (mean and max)."""

    def __init__(self, every: float = 5.0) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> dict[str, float]:
        self._stop.set()
        return {"load1_mean": round(sum(self.samples) / len(self.samples), 2), "load1_max": round(max(self.samples), 2),
                "load1_start": round(self.samples[0], 2)}


def cpu_seconds() -> float:
    """CPU seconds of this process, its finished children and its live ones (the noise worker pool)."""
    import psutil

    own = resource.getrusage(resource.RUSAGE_SELF)
    dead = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + dead.ru_utime + dead.ru_stime
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


class Stages:
    """Progress messages -> when each stage (the message's first word) was first and last reported."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.spans: dict[str, list[float]] = {}

    def __call__(self, *args: Any) -> None:
        what = next((a for a in args if isinstance(a, str)), "")
        label = re.sub(r"[\d,/:()%.]+", " ", what).split()
        key = label[0] if label else "?"
        now = round(time.perf_counter() - self.t0, 1)
        self.spans.setdefault(key, [now, now])[1] = now


def timed(fn, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:  # noqa: ANN001
    load, cpu0, t0 = LoadSampler(), cpu_seconds(), time.perf_counter()
    out = fn(*args, **kwargs)
    return out, {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(cpu_seconds() - cpu0, 1), **load.stop()}


def embed_detail(store: Any, run_id: int) -> dict[str, Any]:
    from core.maps.embed import embed_run_info

    info = embed_run_info(store, run_id)
    params = json.loads(info["params"]) | json.loads(info["metrics"] or "{}")  # computed_with is a metric
    return {"embed_run": run_id, "texts_computed": int(info["n_computed"] or 0), "embed_s": round(float(info["seconds"] or 0), 1),
            "texts_per_s": round(float(info["n_computed"] or 0) / max(float(info["seconds"] or 0), 1e-9), 1),
            "computed_with": params.get("computed_with"), "fallback_reason": params.get("fallback_reason")}


def export_first(store: Any) -> dict[str, Any]:
    """The ONNX export the default path makes on a cold store, timed as its own step (embed then finds it)."""
    import core.maps.onnx_models as onnx_models
    from core.maps.embed import DEFAULT_MODEL, onnx_dir, resolve_backend

    if resolve_backend("auto") != "onnx":
        return {"onnx_export_s": None}
    start = time.perf_counter()
    try:
        onnx_models.ensure_export(DEFAULT_MODEL, onnx_dir(store.path), "fp32")
    except Exception as exc:  # noqa: BLE001 - the run falls back to torch and records why
        return {"onnx_export_s": round(time.perf_counter() - start, 1), "onnx_export_error": str(exc)}
    return {"onnx_export_s": round(time.perf_counter() - start, 1)}


# ---- data ----------------------------------------------------------------------------------------


def _subset_csv(src: Path, n: int, folder: Path) -> Path:
    out = folder / src.name
    with src.open(newline="") as fin, out.open("w", newline="") as fout:
        reader, writer = csv.reader(fin), csv.writer(fout)
        for i, row in enumerate(reader):
            if i > n:
                break
            writer.writerow(row)
    return out


def _subset_lines(src: Path, n: int, folder: Path) -> Path:
    out = folder / src.name
    with src.open() as fin, out.open("w") as fout:
        for i, line in enumerate(fin):
            if i >= n:
                break
            fout.write(line)
    return out


def load_demo_sets(store: Any, names: list[str], quick_rows: int | None, folder: Path) -> dict[str, Any]:
    """The demo datasets as the home page loads them (core.ingest.demo's parameters), optionally cut short."""
    from core.ingest.demo import DEMO, _name_labels
    from core.ingest.importer import ingest

    start, shared = time.perf_counter(), shared_dir()
    for demo in DEMO:
        if demo.name not in names:
            continue
        path = shared / demo.path
        if quick_rows and demo.name in ("hate-offensive-crowd", "gsm8k-train", "gsm8k-test", "arena-hard"):
            cut = folder / f"cut-{demo.name}"
            cut.mkdir(exist_ok=True)
            path = (_subset_csv if path.suffix == ".csv" else _subset_lines)(path, quick_rows, cut)
        ingest(store, path, name=demo.name, shape=demo.shape, mapping=demo.mapping, license=demo.license,
               synthetic=demo.synthetic, is_eval=demo.is_eval, description=demo.description)
        if demo.label_field:
            _name_labels(store, demo, (shared / demo.path).parent)
    return {"load_s": round(time.perf_counter() - start, 1),
            "samples": {n: store.dataset(n).n_samples for n in names}}


def _documents() -> list[str]:
    """Every text of the shared datasets, whole."""
    shared = shared_dir()
    docs: list[str] = []

    def jsonl(rel: str) -> list[dict]:
        with (shared / rel).open() as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def jsonfile(rel: str) -> list[dict]:
        return json.loads((shared / rel).read_text())

    for row in jsonl("gsm8k/train.jsonl") + jsonl("gsm8k/test.jsonl") + jsonl("gsm8k/test_socratic.jsonl"):
        docs += [row["question"], row["answer"]]
    for row in jsonl("gsm8k/example_model_solutions.jsonl"):
        docs += [str(v) for v in row.values() if isinstance(v, str)]
    with (shared / "hate-offensive-crowd/labeled_data.csv").open(newline="") as handle:
        docs += [row["tweet"] for row in csv.DictReader(handle)]
    with (shared / "rte-crowd/rte.standardized.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            docs += [row["text"], row["hypothesis"]]
    for rel in ("alpaca-eval/gpt4_model_outputs.json", "alpaca-eval/text_davinci_003_model_outputs.json",
                "alpaca-gpt4-demo-1k/alpaca_en_demo.json", "alpaca-eval/gpt4_vs_davinci003_alpaca_eval_gpt4_annotations.json"):
        for row in jsonfile(rel):
            docs += [str(v) for k, v in row.items() if isinstance(v, str) and k in
                     ("instruction", "input", "output", "output_1", "output_2")]
    for row in jsonl("hh-rlhf-harmless-test/harmless-base_test.jsonl"):
        docs += re.split(r"\n\n(?:Human|Assistant): ", row["chosen"]) + re.split(r"\n\n(?:Human|Assistant): ", row["rejected"])
    for rel in ("arena-hard/arena_hard_v0.1_question.jsonl", "mt-bench/mt_bench_question.jsonl",
                "self-instruct-user-oriented/user_oriented_instructions.jsonl", "oasst-sample/en_100_text.jsonl",
                "oasst-sample/prompt_lottery_en_250_text.jsonl"):
        for row in jsonl(rel):
            docs += [s for s in _strings(row)]
    return docs


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def map_texts(n: int) -> list[str]:
    """n distinct real texts: whole documents first, then their paragraphs and sentences, shuffled (seed 0)."""
    import numpy as np

    docs = [" ".join(d.split()) for d in _documents()]
    seen: dict[str, None] = dict.fromkeys(d for d in docs if len(d) >= 20)
    pieces = (p for d in _documents() for p in re.split(r"\n+|(?<=[.!?])\s+", d))
    for piece in pieces:
        if len(seen) >= n:
            break
        piece = " ".join(piece.split())
        if len(piece) >= 20:
            seen.setdefault(piece, None)
    texts = list(seen)
    if len(texts) < n:
        sys.exit(f"only {len(texts)} distinct texts in the shared datasets; asked for {n}")
    order = np.random.default_rng(0).permutation(len(texts))[:n]
    return [texts[i] for i in order]


# ---- parts ---------------------------------------------------------------------------------------


def part_noise(store: Any, folder: Path, quick: bool, compare: str | None) -> dict[str, Any]:
    from core.noise.config import METHODS
    from core.noise.run import run_noise

    out = load_demo_sets(store, ["hate-offensive-crowd"], 1000 if quick else None, folder)
    stages = Stages()

    def answer() -> Any:
        export = export_first(store)
        table = run_noise(store, "hate-offensive-crowd", VOTES, METHODS, progress=stages)
        return table, export

    (table, export), figures = timed(answer)
    out |= figures | export | {"methods": list(METHODS), "label_source": VOTES, "stages_s": stages.spans,
                               "flagged": int(table.attrs["summary"]["n_label_issues"])}
    out |= embed_detail(store, int(table.attrs["embedding_run_id"]))
    if compare == "torch":
        out["torch"] = torch_today(["hate-offensive-crowd"], quick, folder, out["wall_s"] - out["embed_s"]
                                   - (out["onnx_export_s"] or 0))
    return out


def torch_today(names: list[str], quick: bool, folder: Path, rest_s: float) -> dict[str, Any]:
    """Today's path: torch embeds the same datasets into a second cold store; + the answer's other work."""
    from core.maps.embed import embed
    from core.store.database import Store

    other = folder / "torch"
    other.mkdir()
    store = Store(other / "cold-torch.duckdb")
    load_demo_sets(store, names, 1000 if quick else None, other)
    _, figures = timed(lambda: [embed(store, n, backend="torch") for n in names])
    return figures | {"today_total_s": round(figures["wall_s"] + rest_s, 1),
                      "note": "torch embed wall + this run's non-embedding, non-export time"}


def part_contamination(store: Any, folder: Path, quick: bool, compare: str | None) -> dict[str, Any]:
    import core.contamination.check as contam

    out = load_demo_sets(store, ["gsm8k-train", *EVAL_SETS], 1000 if quick else None, folder)
    methods = [m for m in contam.METHODS if m not in ("mink", "minkpp")]
    stages = Stages()

    def answer() -> Any:
        export = export_first(store)
        return contam.check_contamination(store, "gsm8k-train", None, methods=methods, progress=stages), export

    (result, export), figures = timed(answer)
    out |= figures | export | {"methods": methods, "against": list(EVAL_SETS), "stages_s": stages.spans}
    runs = store.query_df("SELECT run_id FROM runs WHERE kind = 'embed' ORDER BY run_id")
    out["embed_runs"] = [embed_detail(store, int(r)) for r in runs.run_id]
    embed_s = sum(r["embed_s"] for r in out["embed_runs"])
    if compare == "torch":
        out["torch"] = torch_today(["gsm8k-train", *EVAL_SETS], quick, folder,
                                   out["wall_s"] - embed_s - (out["onnx_export_s"] or 0))
    return out


def part_map(store: Any, folder: Path, quick: bool, compare: str | None, torch_sample: int) -> dict[str, Any]:
    from core.ingest.importer import ingest_records
    from core.maps.embed import embed, embed_run_info
    from core.maps.points import make_map

    n = 2000 if quick else 100_000
    start = time.perf_counter()
    texts = map_texts(n)
    ingest_records(store, ({"text": t} for t in texts), name="map-texts", shape="text", license="mixed (shared)")
    out: dict[str, Any] = {"load_s": round(time.perf_counter() - start, 1), "samples": {"map-texts": n},
                           "mean_chars": round(sum(map(len, texts)) / n, 1)}
    stages = Stages()

    def answer() -> Any:
        export = export_first(store)
        return make_map(store, "map-texts", method="umap", clusters="hdbscan", progress=stages), export

    (info, export), figures = timed(answer)
    out |= figures | export | {"method": "umap", "clusters": "hdbscan", "stages_s": stages.spans,
                               "n_clusters": int(store.query_df("SELECT count(DISTINCT cluster) AS n FROM clusters "
                                                                "WHERE run_id = ?", [info.cluster_run_id]).n[0])
                               if info.cluster_run_id else None}
    out |= embed_detail(store, info.embedding_run_id)
    if compare == "torch":
        # Today's torch path on a sample of the same texts (in a second cold store), extrapolated.
        from core.store.database import Store

        other = Store(folder / "cold-torch.duckdb")
        sample = texts[:: max(1, n // torch_sample)][:torch_sample]
        ingest_records(other, ({"text": t} for t in sample), name="torch-sample", shape="text")
        report, figures = timed(embed, other, "torch-sample", backend="torch")
        rate = report.n_computed / max(float(embed_run_info(other, report.run_id)["seconds"]), 1e-9)
        rest = out["wall_s"] - out["embed_s"] - (out["onnx_export_s"] or 0)
        out["torch_sample"] = figures | {"texts": report.n_computed, "texts_per_s": round(rate, 1),
                                         "extrapolated_wall_s": round(n / rate + rest, 1),
                                         "note": "torch embedding of all texts at the sample's rate + this run's "
                                                 "non-embedding time (projection, clusters, labels)"}
    return out


def child(part: str, quick: bool, compare: str | None, torch_sample: int) -> None:
    from core.store.database import Store

    with tempfile.TemporaryDirectory(prefix=f"ttfa-{part}-") as tmp:
        os.environ.pop("ASSAY_ONNX_DIR", None)  # the export goes beside this cold store
        store = Store(Path(tmp) / "cold.duckdb")
        folder = Path(tmp)
        if part == "noise":
            out = part_noise(store, folder, quick, compare)
        elif part == "contamination":
            out = part_contamination(store, folder, quick, compare)
        else:
            out = part_map(store, folder, quick, compare, torch_sample)
        out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(out, default=str), flush=True)


def run_part(part: str, quick: bool, compare: str | None, torch_sample: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.time_to_first_answer", "--child", part, "--torch-sample", str(torch_sample)]
    cmd += ["--quick"] if quick else []
    cmd += ["--compare", compare] if compare else []
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr[-3000:]}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["target_s"], out["met"] = TARGETS[part], out["wall_s"] < TARGETS[part]
    out["today"] = TODAY[part]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=tuple(TARGETS), action="append")
    parser.add_argument("--quick", action="store_true", help="small cuts of the data (1,000 tweets, 1,000 rows of "
                        "each GSM8K split and Arena-Hard, 2,000 map texts): checks the script, not the targets")
    parser.add_argument("--compare", choices=("torch",), default=None, help="also time today's torch path")
    parser.add_argument("--torch-sample", type=int, default=5000, help="map texts embedded with torch for the comparison")
    parser.add_argument("--child", choices=tuple(TARGETS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.quick, args.compare, args.torch_sample)
        return
    name = "time_to_first_answer" + ("-quick" if args.quick else "")
    previous = RESULTS / f"{name}.json"
    results: dict[str, Any] = {}
    if args.only and previous.exists():  # keep the other parts' last figures
        results = {k: v for k, v in json.loads(previous.read_text()).get("parts", {}).items() if k not in args.only}
    for part in args.only or list(TARGETS):
        print(f"{part} ...", flush=True)
        results[part] = run_part(part, args.quick, args.compare, args.torch_sample)
        results[part]["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        print(json.dumps(results[part], indent=2), flush=True)
    path = write_results(name, {"command": "python -m bench.time_to_first_answer " + " ".join(sys.argv[1:]),
                                "parts": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
