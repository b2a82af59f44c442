"""Benchmark: near duplicates in 100,000 documents; n-gram contamination of 100,000 samples vs 2,000 eval items
(GPT-3 overlap with N per benchmark and its normalisation, PaLM 8-grams); SemDeDup on 50,000 vectors.

Documents are real texts from ../shared/datasets (GSM8K, Alpaca-GPT4, HH-RLHF, OASST, tweets, ...) paired at
random into 100,000 distinct documents, of which 5,000 get a planted near copy (3 words replaced) in place of
an ordinary document. Eval items: GSM8K test + mt-bench + arena-hard + alpaca-eval instructions (2,000);
500 of them are planted verbatim into training documents.

Each phase runs in its own process (peak memory is its own). Baselines in the same run: exact pairwise
Jaccard of shingle sets on a 2,000-document subsample, extrapolated to all pairs; plain Python sets of
13-gram tuples intersected per training document.

    .venv/bin/python -m bench.dedup_contamination            # all phases, writes bench/results/dedup_contamination.json
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import time
from typing import Any

import numpy as np

import core.contamination.check as C
import core.dedup.groups as dedup
from bench.common import peak_rss_mb, run_isolated, shared_dir, write_results
from core import textnorm

N_DOCS = 100_000
N_NEAR = 5_000
N_EVAL = 2_000
N_PLANT = 500
BATCH = 5_000
THRESHOLD = 0.7
NUM_PERM = 128
SHINGLE = 3
BASELINE_SAMPLE = 2_000


def _jsonl(path) -> list[dict]:  # noqa: ANN001
    with open(path) as fh:
        return [json.loads(line) for line in fh]


def real_texts() -> list[str]:
    d = shared_dir()
    texts = [r["question"] + "\n" + r["answer"] for r in _jsonl(d / "gsm8k/train.jsonl")]
    with open(d / "alpaca-gpt4-demo-1k/alpaca_en_demo.json") as fh:
        texts += [r["instruction"] + "\n" + r["output"] for r in json.load(fh)]
    texts += [r["chosen"] for r in _jsonl(d / "hh-rlhf-harmless-test/harmless-base_test.jsonl")]
    texts += [r["text"] for r in _jsonl(d / "oasst-sample/en_100_message.jsonl")]
    with open(d / "hate-offensive-crowd/labeled_data.csv", newline="") as fh:
        texts += [row["tweet"] for row in csv.DictReader(fh)]
    return [t for t in dict.fromkeys(texts) if t.strip()]


def eval_benchmarks() -> list[tuple[str, str]]:
    """(benchmark, item text), N_EVAL distinct items in all."""
    d = shared_dir()
    items = [("gsm8k-test", r["question"] + "\n" + r["answer"]) for r in _jsonl(d / "gsm8k/test.jsonl")]
    items += [("mt-bench", "\n".join(r["turns"])) for r in _jsonl(d / "mt-bench/mt_bench_question.jsonl")]
    for r in _jsonl(d / "arena-hard/arena_hard_v0.1_question.jsonl"):
        turns = r["turns"]
        items.append(("arena-hard", "\n".join(t["content"] if isinstance(t, dict) else str(t) for t in turns)))
    with open(d / "alpaca-eval/gpt4_model_outputs.json") as fh:
        items += [("alpaca-eval", r["instruction"]) for r in json.load(fh)]
    first: dict[str, str] = {}
    for name, text in items:
        first.setdefault(text, name)
    return [(name, text) for text, name in first.items()][:N_EVAL]


def eval_items() -> list[str]:
    return [text for _, text in eval_benchmarks()]


def corpus(seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    """100,000 distinct documents (random pairs of real texts) with N_NEAR planted near copies."""
    rng = random.Random(seed)
    pool = real_texts()
    docs = [rng.choice(pool) + "\n" + rng.choice(pool) for _ in range(N_DOCS - N_NEAR)]
    planted = []
    for src in rng.sample(range(len(docs)), N_NEAR):
        words = docs[src].split(" ")
        for k in rng.sample(range(len(words)), min(3, len(words))):
            words[k] = rng.choice(["zebra", "quantum", "marmalade", "tundra"])
        docs.append(" ".join(words))
        planted.append((src, len(docs) - 1))
    return docs, planted


def training_with_evals(seed: int = 1) -> tuple[list[str], list[str], set[int]]:
    docs, _ = corpus()
    evals = eval_items()
    rng = random.Random(seed)
    where = rng.sample(range(len(docs)), N_PLANT)
    for k, i in enumerate(where):  # the eval item inside the document, not the whole document
        docs[i] = docs[i][:300] + "\n" + evals[(k * 7) % len(evals)] + "\n" + docs[i][-300:]
    return docs, evals, set(where)


def _batches(docs: list[str]):  # noqa: ANN202
    for lo in range(0, len(docs), BATCH):
        yield np.arange(lo, min(lo + BATCH, len(docs))), docs[lo:lo + BATCH]


def _finish(t0: float, extra: dict[str, Any]) -> None:
    out = {"seconds": round(time.perf_counter() - t0, 2),
           "peak_rss_mb": round(peak_rss_mb(), 1), **extra}
    print(json.dumps(out))


def phase_near() -> None:
    docs, planted = corpus()
    t0 = time.perf_counter()
    pairs = dedup.near_pairs(_batches(docs), threshold=THRESHOLD, num_perm=NUM_PERM, shingle=SHINGLE)
    groups = dedup.groups_from_pairs(pairs)
    seconds = time.perf_counter() - t0
    g = dict(zip(groups.sample_id, groups.group_id, strict=True))
    hit = [a in g and g.get(a) == g.get(b) for a, b in planted]
    found = sum(hit)
    # Three replaced words cut a short document's Jaccard below the threshold: score recall where the
    # planted pair really is over the threshold, and separately over all planted pairs.
    true_j = np.array([_jaccard(docs[a], docs[b]) for a, b in planted])
    over = true_j >= THRESHOLD
    planted_set = {tuple(sorted(p)) for p in planted}
    extra = [(int(a), int(b)) for a, b in zip(pairs.a, pairs.b, strict=True) if tuple(sorted((a, b))) not in planted_set]
    # Are the unplanted pairs real duplicates (true Jaccard near the threshold) or errors of the sketch?
    jac = [_jaccard(docs[a], docs[b]) for a, b in extra[:20_000]]
    wrong = {x for (a, b), j in zip(extra, jac, strict=False) if j < THRESHOLD - 0.1 for x in (a, b)}
    _finish(t0, {"near_seconds": round(seconds, 2), "docs_per_s": round(len(docs) / seconds),
                 "recall_planted_all": found / len(planted),
                 "planted_pairs_true_jaccard_over_threshold": int(over.sum()),
                 "recall_planted_over_threshold": float(np.mean(np.array(hit)[over])),
                 "recall_planted_jaccard_0.6_0.7": float(np.mean(np.array(hit)[(true_j >= 0.6) & ~over])),
                 "pairs_reported": len(pairs),
                 "unplanted_pairs": len(extra), "unplanted_pairs_checked": len(jac),
                 "unplanted_pairs_true_jaccard_below_0.6": sum(j < THRESHOLD - 0.1 for j in jac),
                 "false_positive_rate_docs": len(wrong) / (N_DOCS - 2 * N_NEAR)})


def _shingles(text: str) -> set:
    toks = textnorm.tokens(text)
    if len(toks) < SHINGLE:
        return {tuple(toks)}
    return {tuple(toks[i:i + SHINGLE]) for i in range(len(toks) - SHINGLE + 1)}


def _jaccard(a: str, b: str) -> float:
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / max(len(sa | sb), 1)


def phase_near_baseline() -> None:
    docs, planted = corpus()
    rng = random.Random(3)
    pick = rng.sample(range(len(docs)), BASELINE_SAMPLE)
    t0 = time.perf_counter()
    sets = [_shingles(docs[i]) for i in pick]
    n_pairs = 0
    hits = 0
    for i in range(len(sets)):
        si = sets[i]
        for j in range(i + 1, len(sets)):
            sj = sets[j]
            inter = len(si & sj)
            if inter and inter / len(si | sj) >= THRESHOLD:
                hits += 1
            n_pairs += 1
    seconds = time.perf_counter() - t0
    all_pairs = N_DOCS * (N_DOCS - 1) / 2
    _finish(t0, {"subsample": BASELINE_SAMPLE, "pairs": n_pairs, "subsample_seconds": round(seconds, 2),
                 "extrapolated_seconds_100k": round(seconds * all_pairs / n_pairs), "pairs_over_threshold": hits})


def phase_ngram() -> None:
    """GPT-3 overlap with N per benchmark (and GPT-3's normalisation), PaLM 8-grams, in one pass."""
    import pandas as pd

    docs, evals, planted = training_with_evals()
    t0 = time.perf_counter()
    hasher = textnorm.WordHasher()
    items = _eval_frame(evals)
    lengths = items["text"].map(lambda t: len(textnorm.gpt3_words(t)))
    n_of = {int(ds): C.gpt3_n(c.to_numpy()) for ds, c in lengths.groupby(items["dataset_id"])}
    evs = [C.build_eval_ngrams(items[items["dataset_id"].map(n_of) == n], n, hasher) for n in sorted(set(n_of.values()))]
    ev8 = C.build_eval_ngrams(items, 8, hasher)
    hits, counts = C.scan_training(_batches(docs), [*evs, ev8], hasher)
    gpt3 = [C.ngram13_results(h, ev, max_train_df=10) for h, ev in zip(hits[:-1], evs, strict=True)]
    r13 = pd.concat([r for r, _ in gpt3], ignore_index=True)
    capped = pd.concat([c for _, c in gpt3], ignore_index=True)
    r8, _coverage = C.ngram8_results(hits[-1], ev8, counts[-1])
    seconds = time.perf_counter() - t0
    names = {i + 1: name for i, name in enumerate(dict.fromkeys(n for n, _ in eval_benchmarks()))}
    gpt3_n = {names[ds]: n for ds, n in n_of.items()}
    under13 = {names[int(ds)]: int((c < 13).sum()) for ds, c in lengths.groupby(items["dataset_id"])}
    flagged13 = set(int(x) for x in r13.train_id)
    flagged8 = set(int(x) for x in r8[(r8.ngram8_train_frac >= 0.7) | (r8.ngram8_eval_frac >= 0.7)].train_id)
    clean = N_DOCS - len(planted)
    _finish(t0, {"ngram_seconds": round(seconds, 2), "docs_per_s": round(len(docs) / seconds),
                 "recall_13gram": len(flagged13 & planted) / len(planted),
                 "false_positive_rate_13gram": len(flagged13 - planted) / clean,
                 "recall_8gram_palm": len(flagged8 & planted) / len(planted),
                 "false_positive_rate_8gram_palm": len(flagged8 - planted) / clean,
                 "unplanted_flagged_13gram": len(flagged13 - planted), "gpt3_n_per_benchmark": gpt3_n,
                 "items_under_13_words": under13, "capped_ngrams": len(capped),
                 "capped_eval_items": int(capped.eval_id.nunique()) if len(capped) else 0})


def _eval_frame(evals: list[str]):  # noqa: ANN202
    import pandas as pd

    bench = {text: name for name, text in eval_benchmarks()}
    ids = {name: i + 1 for i, name in enumerate(dict.fromkeys(bench.values()))}
    return pd.DataFrame({"id": np.arange(len(evals)) + 10_000_000,
                         "dataset_id": [ids[bench[e]] for e in evals], "text": evals})


def phase_ngram_baseline() -> None:
    docs, evals, planted = training_with_evals()
    t0 = time.perf_counter()
    frame = _eval_frame(evals)
    lengths = frame["text"].map(lambda t: len(textnorm.gpt3_words(t)))
    n_of = {int(ds): C.gpt3_n(c.to_numpy()) for ds, c in lengths.groupby(frame["dataset_id"])}
    grams: dict[int, set[tuple[str, ...]]] = {n: set() for n in n_of.values()}
    for e, ds in zip(frame["text"], frame["dataset_id"], strict=True):
        toks, n = textnorm.gpt3_words(e), n_of[int(ds)]
        grams[n].update(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))
    flagged = set()
    for i, d in enumerate(docs):
        toks = textnorm.gpt3_words(d)
        if any({tuple(toks[k:k + n]) for k in range(len(toks) - n + 1)} & g for n, g in grams.items()):
            flagged.add(i)
    seconds = time.perf_counter() - t0
    _finish(t0, {"baseline_seconds": round(seconds, 2), "recall_13gram": len(flagged & planted) / len(planted),
                 "unplanted_flagged_13gram": len(flagged - planted)})


def phase_semdedup() -> None:
    """SemDeDup on 50,000 unit vectors (64-d, 50 Gaussian clusters) with 2,000 planted near copies (cosine
    about 0.99 to their source); eps 0.05. Speed, recall of planted copies, and removals that are not."""
    rng = np.random.default_rng(0)
    n, dim, planted_n = 50_000, 64, 2_000
    centres = rng.normal(size=(50, dim))
    x = centres[rng.integers(0, 50, n - planted_n)] + 0.6 * rng.normal(size=(n - planted_n, dim))
    src = rng.choice(n - planted_n, planted_n, replace=False)
    copies = x[src] + 0.015 * np.linalg.norm(x[src], axis=1, keepdims=True) * rng.normal(size=(planted_n, dim)) / 8
    x = np.vstack([x, copies]).astype(np.float32)
    ids = np.arange(n)
    t0 = time.perf_counter()
    members = dedup.semdedup(ids, x, eps=0.05, n_clusters=50)
    seconds = time.perf_counter() - t0
    removed = set(members.sample_id[~members.is_representative].tolist())
    pairs = set(zip(src.tolist(), range(n - planted_n, n), strict=True))
    caught = sum(a in removed or b in removed for a, b in pairs)
    planted_ids = set(range(n - planted_n, n)) | set(src.tolist())
    _finish(t0, {"semdedup_seconds": round(seconds, 2), "vectors": n, "planted_pairs": planted_n,
                 "recall_planted_pairs": caught / planted_n, "removed": len(removed),
                 "removed_not_planted": len(removed - planted_ids)})


PHASES = {"near": phase_near, "near_baseline": phase_near_baseline, "ngram": phase_ngram,
          "ngram_baseline": phase_ngram_baseline, "semdedup": phase_semdedup}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", choices=PHASES)
    args = parser.parse_args()
    if args.phase:
        PHASES[args.phase]()
        return
    results: dict[str, Any] = {"params": {"n_docs": N_DOCS, "n_near_planted": N_NEAR, "n_eval": N_EVAL,
                                          "n_eval_planted": N_PLANT, "threshold": THRESHOLD, "num_perm": NUM_PERM,
                                          "shingle_words": SHINGLE}}
    for phase in PHASES:
        print(f"running {phase} ...", file=sys.stderr, flush=True)
        results[phase] = run_isolated("bench.dedup_contamination", "--phase", phase)
        print(json.dumps(results[phase]), file=sys.stderr, flush=True)
    near, base = results["near"], results["near_baseline"]
    results["near_speedup_vs_pairwise"] = round(base["extrapolated_seconds_100k"] / near["near_seconds"], 1)
    results["ngram_speedup_vs_python_sets"] = round(results["ngram_baseline"]["baseline_seconds"] /
                                                    results["ngram"]["ngram_seconds"], 2)
    path = write_results("dedup_contamination", results)
    print(json.dumps(results, indent=2))
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
