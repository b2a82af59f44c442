"""Tagging benchmarks on the shared real data (CPU, offline):

- offline tagging throughput (samples/s) on alpaca-gpt4-demo-1k: structure only, language (lingua high
  accuracy), zero-shot category, and all offline tags together; model load times reported apart;
- offline category accuracy on a labelled real set, per benchmark and per MT-Bench category: MT-Bench
  (80, its 8 categories mapped to Magpie's as in core/tags/taggers/zeroshot.MT_BENCH_MAP; extraction = Data
  analysis or Information seeking) and GSM8K test (Math); the tagger's examples contain none of them;
- lingua's language accuracy on oasst-sample's `lang` labels;
- the Bradley-Terry preference proxy's (tag preference_proxy) held-out pairwise accuracy on hh-rlhf-harmless-test (all pairs, 20% held out).

    .venv/bin/python -m bench.tagging [--gsm 300] [--quick]

Writes bench/results/tagging.json. Where a GPU is present, reward-model throughput by batch size is
measured with `--rm-throughput MODEL` (any sequence-classification model name or path).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.common import peak_rss_mb, shared_dir, write_results  # noqa: E402
from core.ingest.demo import DEMO, load_demo  # noqa: E402
from core.store.database import Store  # noqa: E402


def _timed(fn, *args, **kwargs) -> tuple[Any, float]:  # noqa: ANN001
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def throughput(store: Store, dataset: str) -> dict[str, Any]:
    """Offline tagging speed; the in-process vector memory is cleared before each timing so nothing is
    reused from an earlier step (model loads are timed apart, first thing in the process)."""
    import core.maps.embed as embed
    from core.tags.taggers import offline, vectors, zeroshot
    from core.tags.taggers.base import load_samples
    from core.tags.taggers.job import run_tagging

    n = store.dataset(dataset).n_samples
    out: dict[str, Any] = {"dataset": dataset, "n": n}
    _, out["lingua_high_load_s"] = _timed(lambda: offline.detect_languages(["warm up the detector"], "high"))
    _, out["embed_model_load_s"] = _timed(lambda: embed.get_embedder(None))
    for label, tags in [("structure", "turns,lengths"), ("language", "language")]:
        _, seconds = _timed(run_tagging, store, dataset=dataset, tags=tags, language_mode="high", resume=False)
        out[f"{label}_samples_per_s"], out[f"{label}_seconds"] = round(n / seconds, 1), round(seconds, 2)
    texts = list(load_samples(store, store.query_df(
        "SELECT s.id FROM samples s JOIN datasets d USING (dataset_id) WHERE d.name = ?", [dataset])["id"])["instruction"])
    zeroshot.head()
    vectors._MEMORY.clear()
    _, seconds = _timed(zeroshot.classify, texts)
    out["category_classify_samples_per_s"], out["category_classify_seconds"] = round(n / seconds, 1), round(seconds, 2)
    vectors._MEMORY.clear()
    tags = "category,language,turns,lengths"
    _, seconds = _timed(run_tagging, store, dataset=dataset, tags=tags, language_mode="high", resume=False)
    out["all_offline_samples_per_s"], out["all_offline_seconds"] = round(n / seconds, 1), round(seconds, 2)
    out["note"] = ("all_offline includes measuring the zero-shot tagger on the labelled set at the start of the run "
                   "(~180 texts embedded) and writing every tag row; embedding dominates (all-MiniLM-L6-v2, CPU)")
    return out


def language_accuracy(store: Store) -> dict[str, Any]:
    from core.tags.taggers.job import run_tagging

    report = run_tagging(store, dataset="oasst-sample", tags="language", language_mode="high", resume=False)
    return report.metrics["language"] | {"dataset": "oasst-sample (meta.oasst_lang)"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gsm", type=int, default=300, help="GSM8K questions in the labelled set")
    parser.add_argument("--pairs", type=int, default=None, help="preference pairs (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller throughput dataset")
    parser.add_argument("--rm-throughput", help="reward model to time by batch size (GPU)")
    parser.add_argument("--category-only", action="store_true", help="only the category accuracy (MT-Bench, GSM8K)")
    args = parser.parse_args()
    from core.tags.taggers import reward_proxy, zeroshot

    folder = Path(tempfile.mkdtemp(prefix="assay-bench-tags-"))
    store = Store(folder / "bench.duckdb")
    names = ["mt-bench", "gsm8k-test", "alpaca-gpt4-demo-1k", "oasst-sample", "hh-rlhf-harmless-test"]
    if args.category_only:
        names = names[:2]
    load_demo(store, shared_dir(), if_empty=False, names=[d.name for d in DEMO if d.name in names])
    results: dict[str, Any] = {}
    if not args.category_only:
        results["throughput"] = throughput(store, "mt-bench" if args.quick else "alpaca-gpt4-demo-1k")
        print("throughput:", results["throughput"], flush=True)
    results["zero_shot_category"], secs = _timed(zeroshot.evaluate, store, per_set=args.gsm)
    results["zero_shot_category"]["seconds"] = round(secs, 1)
    z = results["zero_shot_category"]
    print("offline category accuracy per benchmark:", z["by_benchmark"], "n:", z["n_by_benchmark"], flush=True)
    print("per MT-Bench category:", z["by_mt_bench_category"], flush=True)
    if args.category_only:
        print("wrote", write_results("tagging_category", results))
        return
    model, secs = _timed(reward_proxy.train_reward_proxy, store, "hh-rlhf-harmless-test", max_pairs=args.pairs)
    results["preference_proxy"] = model.metrics | {"seconds": round(secs, 1), "dataset": "hh-rlhf-harmless-test"}
    print("preference proxy:", results["preference_proxy"], flush=True)
    results["language"] = language_accuracy(store)
    print("language:", results["language"], flush=True)
    if args.rm_throughput:
        results["reward_model_throughput"] = rm_throughput(store, args.rm_throughput)
    results["peak_rss_mb"] = round(peak_rss_mb())
    print("wrote", write_results("tagging", results))


def rm_throughput(store: Store, model: str) -> dict[str, Any]:
    """Conversations/s of one reward model by batch size on alpaca-gpt4-demo-1k (GPU where present)."""
    from core.tags.taggers.base import load_samples
    from core.tags.taggers.reward_models import RewardModel

    ids = store.query_df("SELECT s.id FROM samples s JOIN datasets d USING (dataset_id) "
                         "WHERE d.name = 'alpaca-gpt4-demo-1k' ORDER BY s.id LIMIT 512")["id"].tolist()
    convs = list(load_samples(store, ids)["messages"])
    out: dict[str, Any] = {"model": model, "n": len(convs)}
    for bs in (8, 16, 32, 64, 128):
        rm = RewardModel(model, batch_size=bs)
        rm.score(convs[:bs])  # warm up
        _, secs = _timed(rm.score, convs)
        out[f"bs{bs}_per_s"] = round(len(convs) / secs, 1)
        out["device"], out["dtype"] = rm.device, rm.dtype
    return out


if __name__ == "__main__":
    main()
