"""Benchmark contamination: is an evaluation set (a dataset marked is_eval) inside the training data?

Methods, each a column group in the per-sample result:
- ngram13 (the key predates the per-benchmark N): GPT-3 n-gram overlap (Brown et al. 2020, appendix C).
  Words as GPT-3 normalised them (lower case, whitespace-delimited, punctuation removed:
  `textnorm.gpt3_words`); N is per benchmark, the 5th percentile of its item lengths in words (numpy's
  linear interpolation, rounded down), clamped to 8..13, so short items can be matched. A training sample
  is flagged when it shares any N-gram with an eval item. N-grams found in more than `max_train_df`
  training samples are ignored as GPT-3 did, but not silently: the run record lists the capped n-grams
  and the eval items they belong to (heavy duplication of a test item hides behind the cap).
- ngram8: PaLM (Chowdhery et al. 2022). 8-grams of the same words; flagged when at least 70% of the sample's 8-grams occur in
  the eval set, or at least 70% of its best-matching eval item's 8-grams occur in the sample (PaLM's own
  direction: the eval item is covered by training data). Per eval item, the coverage by the whole
  training set is reported too.
- embedding: nearest eval item by cosine of the same sentence model on both sides (core/maps/embed.py, cached
  runs), on the user turns; catches paraphrases that share few n-grams.
- mink: Min-K% Prob (Shi et al., "Detecting Pretraining Data from Large Language Models", ICLR 2024) and
- minkpp: Min-K%++ (Zhang et al. 2024, "Min-K%++: Improved baseline for detecting pre-training data").
  Both answer "did this causal LM see this text in pre-training?", so they score the *eval items* (is this
  benchmark item in the model's training data?), reported per eval set; they never flag training samples
  (a training sample's own likelihood says nothing about which eval set it copies). Min-K%: the mean of the
  lowest floor(k x n) token log-probabilities (at least one) of the n predicted tokens. Min-K%++: per token
  (log p(x_t|x<t) - mu_t) / sigma_t, mu_t and sigma_t the mean and standard deviation of log p(z|x<t) over
  the vocabulary z drawn from the model's next-token distribution; the same lowest-k% mean. Texts are
  scored with right padding and explicit position ids (a score never depends on its batch), and texts
  longer than the window (2048 tokens by default, never more than the model's context) are scored in
  overlapping windows (stride half a window; each token once,
  with at least half a window of context), stated in the run record; nothing is truncated.

N-grams of every eval set are hashed once; training samples stream past in batches and only hits are kept.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core import textnorm
from core.dedup.groups import CONTENT_SQL, iter_texts
from core.store.database import Store
from core.store.runs import Run

METHODS = ("ngram13", "ngram8", "embedding", "mink", "minkpp")
DEFAULT_METHODS = ("ngram13", "ngram8", "embedding")
DEFAULTS: dict[str, Any] = {
    "max_train_df": 10, "palm_threshold": 0.7, "embed_threshold": 0.85, "mink_k": 0.2, "embed_text": "user",
}
GPT3_N_RANGE = (8, 13)
CAPPED_LISTED = 200  # capped (n-gram, eval item) pairs listed in the run record; all are counted
# One line per method: what made the score, the paper, and any deviation (pages and run records show it).
METHOD_NOTES = {
    "ngram13": "GPT-3 n-gram overlap (Brown et al. 2020, app. C): N per benchmark = 5th percentile of item length "
               "in words, clamped to 8-13; lower case, whitespace words, punctuation removed; n-grams in more than "
               "max_train_df training samples ignored as in the paper, but listed with their eval items.",
    "ngram8": "PaLM 8-gram overlap (Chowdhery et al. 2022, sec. 8): flagged at >= 70% of the sample's or the eval item's "
              "8-grams shared; GPT-3's word normalisation.",
    "embedding": "Nearest eval item by cosine of one sentence model on both sides; not from a paper, a paraphrase "
                 "check with a user-set threshold.",
    "mink": "Min-K% Prob (Shi et al. 2024) of each eval item under the chosen LM: mean of the lowest floor(k x n) "
            "token log-probs (at least 1); higher = more likely in the LM's pre-training data. Long texts in "
            "overlapping windows instead of the paper's truncation.",
    "minkpp": "Min-K%++ (Zhang et al. 2024) of each eval item: per token (log p - mu) / sigma over the next-token "
              "distribution, mean of the lowest k%; higher = more likely seen. Long texts in overlapping windows.",
}
Progress = Callable[[int, int | None], None]


@dataclass
class ContaminationReport:
    run_id: int
    dataset: str
    against: list[str]
    methods: list[str]
    n_samples: int
    summary: pd.DataFrame  # one row per eval set

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "dataset": self.dataset, "against": self.against, "methods": self.methods,
                "n_samples": self.n_samples, "summary": self.summary.to_dict("records")}


# ---- n-grams -----------------------------------------------------------------------------------------

@dataclass
class EvalNgrams:
    """Distinct hashed n-grams of eval items: parallel arrays sorted by hash (a hash may have several owners)."""

    n: int
    hashes: np.ndarray  # uint64, sorted
    eval_id: np.ndarray  # int64 owner eval sample id
    eval_ds: np.ndarray  # int64 owner eval dataset id
    eval_start: np.ndarray  # int64 first word of the n-gram in its (first) place in the eval item
    unique: np.ndarray  # sorted distinct hashes, for membership tests
    totals: pd.Series  # distinct n-grams per eval item


def gpt3_n(word_counts: Sequence[int]) -> int:
    """GPT-3's N for one benchmark: the 5th percentile of its item lengths in words, clamped to 8..13."""
    lo, hi = GPT3_N_RANGE
    if len(word_counts) == 0:
        return hi
    return int(min(max(math.floor(float(np.percentile(np.asarray(word_counts), 5))), lo), hi))


def build_eval_ngrams(items: pd.DataFrame, n: int, hasher: textnorm.WordHasher) -> EvalNgrams:
    """`items` has columns id, dataset_id, text."""
    batch = textnorm.ngram_batch([textnorm.gpt3_words(t) for t in items["text"]], n, hasher)
    df = pd.DataFrame({"h": batch.hashes, "eval_id": items["id"].to_numpy()[batch.doc],
                       "eval_ds": items["dataset_id"].to_numpy()[batch.doc], "start": batch.start})
    df = df.drop_duplicates(["h", "eval_id", "eval_ds"]).sort_values("h", kind="stable")
    return EvalNgrams(n=n, hashes=df["h"].to_numpy(np.uint64), eval_id=df["eval_id"].to_numpy(np.int64),
                      eval_ds=df["eval_ds"].to_numpy(np.int64), eval_start=df["start"].to_numpy(np.int64),
                      unique=np.unique(df["h"].to_numpy(np.uint64)), totals=df.groupby("eval_id").size())


def member(hashes: np.ndarray, sorted_unique: np.ndarray) -> np.ndarray:
    """Boolean mask: which hashes are in the sorted array (binary search; faster than np.isin here)."""
    if len(sorted_unique) == 0:
        return np.zeros(len(hashes), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_unique, hashes), len(sorted_unique) - 1)
    return sorted_unique[pos] == hashes


def scan_training(batches, evals: list[EvalNgrams], hasher: textnorm.WordHasher,
                  progress: Progress | None = None, total: int | None = None) -> tuple[list[pd.DataFrame], pd.Series]:
    """One streaming pass: per n-gram size, the hits (train_id, hash, start) and each sample's n-gram count."""
    hits: list[list[pd.DataFrame]] = [[] for _ in evals]
    counts: list[pd.Series] = [[] for _ in evals]  # type: ignore[misc]
    done = 0
    for ids, texts in batches:
        words = textnorm.word_hashes([textnorm.gpt3_words(t) for t in texts], hasher)
        for k, ev in enumerate(evals):
            batch = textnorm.ngram_batch(None, ev.n, words=words)
            mask = member(batch.hashes, ev.unique)
            hits[k].append(pd.DataFrame({"train_id": ids[batch.doc[mask]], "h": batch.hashes[mask],
                                         "start": batch.start[mask]}))
            counts[k].append(pd.Series(np.maximum(batch.n_words - ev.n + 1, 0), index=ids))
        done += len(ids)
        if progress:
            progress(done, total)
    merged = [pd.concat(h, ignore_index=True) if h else pd.DataFrame(columns=["train_id", "h", "start"]) for h in hits]
    n_grams = [pd.concat(c) if len(c) else pd.Series(dtype="int64") for c in counts]
    return merged, n_grams


def _owners(hits: pd.DataFrame, ev: EvalNgrams) -> pd.DataFrame:
    """Hits exploded to every eval item that owns the hash: (train_id, h, start, eval_id, eval_ds)."""
    owners = pd.DataFrame({"h": ev.hashes, "eval_id": ev.eval_id, "eval_ds": ev.eval_ds})
    return hits.merge(owners, on="h")


CAPPED_COLUMNS = ["eval_ds", "eval_id", "eval_start", "n", "n_train_samples"]


def ngram13_results(hits: pd.DataFrame, ev: EvalNgrams, max_train_df: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """GPT-3 overlap per (train sample, eval set): best eval item and distinct shared N-grams, frequent ones
    ignored; and those frequent ones (eval_ds, eval_id, eval_start, n, n_train_samples), so the cap is visible."""
    empty = pd.DataFrame(columns=["train_id", "eval_ds", "ngram13_eval_id", "ngram13_hits", "ngram13_starts"])
    if hits.empty:
        return empty, pd.DataFrame(columns=CAPPED_COLUMNS)
    df_count = hits.groupby("h")["train_id"].nunique()
    capped = df_count[df_count > max_train_df].rename("n_train_samples").reset_index()
    owners = pd.DataFrame({"h": ev.hashes, "eval_id": ev.eval_id, "eval_ds": ev.eval_ds, "eval_start": ev.eval_start})
    capped = capped.merge(owners, on="h").assign(n=ev.n)[CAPPED_COLUMNS]
    keep = df_count[df_count <= max_train_df].index
    hits = hits[hits["h"].isin(keep)]
    ex = _owners(hits, ev)
    if ex.empty:
        return empty, capped
    per_item = ex.groupby(["train_id", "eval_ds", "eval_id"])["h"].nunique().rename("hits").reset_index()
    best = per_item.sort_values(["hits", "eval_id"], ascending=[False, True]).drop_duplicates(["train_id", "eval_ds"])
    starts = ex.groupby(["train_id", "eval_ds"])["start"].agg(lambda s: sorted(set(int(x) for x in s)))
    best = best.merge(starts.rename("ngram13_starts").reset_index(), on=["train_id", "eval_ds"])
    return best.rename(columns={"eval_id": "ngram13_eval_id", "hits": "ngram13_hits"}), capped


def ngram8_results(hits: pd.DataFrame, ev: EvalNgrams, n_grams: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """PaLM-style fractions per (train sample, eval set), and per eval item its coverage by all training data."""
    cols = ["train_id", "eval_ds", "ngram8_eval_id", "ngram8_train_frac", "ngram8_eval_frac", "ngram8_starts"]
    coverage = pd.DataFrame({"eval_id": ev.totals.index, "ngram8_coverage": 0.0})
    if hits.empty:
        return pd.DataFrame(columns=cols), coverage
    ex = _owners(hits, ev)
    # Share of the sample's 8-gram occurrences found in the eval set (per eval set).
    occ = ex.drop_duplicates(["train_id", "eval_ds", "start"]).groupby(["train_id", "eval_ds"]).size()
    occ = occ.rename("matched").reset_index()
    occ["ngram8_train_frac"] = occ["matched"] / occ["train_id"].map(n_grams).clip(lower=1).to_numpy()
    # Share of each eval item's distinct 8-grams found in the sample; keep the best item per eval set.
    per_item = ex.groupby(["train_id", "eval_ds", "eval_id"])["h"].nunique().rename("m").reset_index()
    per_item["ngram8_eval_frac"] = per_item["m"] / per_item["eval_id"].map(ev.totals).to_numpy()
    best = per_item.sort_values(["ngram8_eval_frac", "eval_id"], ascending=[False, True]).drop_duplicates(
        ["train_id", "eval_ds"])
    starts = ex.groupby(["train_id", "eval_ds"])["start"].agg(lambda s: sorted(set(int(x) for x in s)))
    out = occ.merge(best, on=["train_id", "eval_ds"]).merge(starts.rename("ngram8_starts").reset_index(),
                                                             on=["train_id", "eval_ds"])
    out = out.rename(columns={"eval_id": "ngram8_eval_id"})[cols]
    found = ex.groupby("eval_id")["h"].nunique()
    coverage["ngram8_coverage"] = (coverage["eval_id"].map(found).fillna(0) /
                                   coverage["eval_id"].map(ev.totals)).to_numpy()
    return out, coverage


# ---- embeddings --------------------------------------------------------------------------------------

def nearest(train: np.ndarray, evals: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Index and cosine of the nearest eval vector for each training vector (both L2-normalised)."""
    idx = np.zeros(len(train), dtype=np.int64)
    cos = np.zeros(len(train), dtype=np.float32)
    for lo in range(0, len(train), chunk):
        sims = train[lo:lo + chunk] @ evals.T
        idx[lo:lo + chunk] = sims.argmax(axis=1)
        cos[lo:lo + chunk] = sims[np.arange(len(sims)), idx[lo:lo + chunk]]
    return idx, cos


def embedding_results(store: Store, dataset: str, eval_names: list[str], *, model: str | None, text: str,
                      progress: Progress | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Nearest eval item per training sample and eval set, with the same model and text on both sides."""
    import core.maps.embed as embed

    train_run = embed.embed(store, dataset, model=model, text=text, progress=progress).run_id
    train_ids, train_vecs = embed.load_vectors(store, train_run)
    runs = {dataset: train_run}
    frames = []
    for name in eval_names:
        info = store.dataset(name)
        run = embed.embed(store, name, model=model, text=text).run_id
        runs[name] = run
        eval_ids, eval_vecs = embed.load_vectors(store, run)
        if len(eval_ids) == 0 or len(train_ids) == 0:
            continue
        idx, cos = nearest(train_vecs, eval_vecs)
        frames.append(pd.DataFrame({"train_id": train_ids, "eval_ds": info.dataset_id,
                                    "embed_eval_id": eval_ids[idx], "embed_cosine": cos.astype(float)}))
    return (pd.concat(frames, ignore_index=True) if frames else
            pd.DataFrame(columns=["train_id", "eval_ds", "embed_eval_id", "embed_cosine"])), runs


# ---- Min-K% Prob -------------------------------------------------------------------------------------

def load_causal_lm(name_or_path: str, device: str = "auto") -> tuple[Any, Any, str]:
    """(model, tokenizer, device) for any transformers causal LM; CUDA in bf16/fp16 when present."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float32
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype).to(device).eval()
    return model, tokenizer, device


def lowest_k_mean(values: np.ndarray, k: float) -> float:
    """Mean of the floor(k x n) lowest values, at least one (Shi et al.'s count); NaN for no values."""
    if len(values) == 0:
        return float("nan")
    m = max(1, math.floor(len(values) * k))
    return float(np.sort(values)[:m].mean())


DEFAULT_WINDOW = 2048  # tokens per window when not asked: (window x vocabulary) logits must fit in memory
BATCH_TOKENS = 16_384  # tokens per forward pass at most (several windows of short texts share one)


def model_window(model: Any, max_length: int | None = None) -> int:
    """Tokens per forward pass: `max_length` (default 2048), never more than the model's context."""
    config = getattr(model, "config", None)
    limit = next((getattr(config, a) for a in ("max_position_embeddings", "n_positions", "n_ctx")
                  if isinstance(getattr(config, a, None), int)), None)
    window = min(x for x in (limit, max_length or DEFAULT_WINDOW) if x)
    if window < 2:
        raise ValueError(f"a scoring window needs at least 2 tokens, got {window}")
    return int(window)


def _windows(n_tokens: int, window: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) per window: each token from 1 on is predicted exactly once, in
    the window that gives it the most context up to half a window (stride window // 2)."""
    if n_tokens <= window:
        return [(0, n_tokens, 1)]
    stride = max(1, window // 2)
    out, scored = [], 1
    begin = 0
    while scored < n_tokens:
        end = min(begin + window, n_tokens)
        out.append((begin, end, scored))
        scored = end
        begin = end - window + stride if end < n_tokens else end
        begin = max(begin, 0)
    return out


STATS_ELEMENTS = 1 << 26  # logits x vocabulary entries per float64 chunk (512 MB a copy)


def _token_stats(logits: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per position of (rows, width, vocab) logits: log p of the target token, and (log p - mu) / sigma.

    In float64, over chunks of positions: float32 log-probabilities near -log(vocab) round to ~5e-7, which
    sigma (small for a flat distribution) magnified into z-scores that moved with the batch's shape."""
    import torch

    rows, width, vocab = logits.shape
    step = max(1, STATS_ELEMENTS // vocab)
    token_lp = torch.empty((rows, width), dtype=torch.float64, device=logits.device)
    z = torch.empty_like(token_lp)
    for row in range(rows):  # slices of the logits as they are: no copy of the whole batch
        for lo in range(0, width, step):
            logp = logits[row, lo:lo + step].to(torch.float64, copy=True)  # changed in place below
            logp -= torch.logsumexp(logp, -1, keepdim=True)
            lp = logp.gather(-1, target[row, lo:lo + step].unsqueeze(-1)).squeeze(-1)
            probs = logp.exp()
            mu = torch.einsum("nv,nv->n", probs, logp)
            logp -= mu.unsqueeze(-1)  # sum p (log p - mu)^2, not E[(log p)^2] - mu^2: no cancellation
            sigma = torch.einsum("nv,nv->n", probs, logp.square_()).clamp_min(1e-24).sqrt()
            token_lp[row, lo:lo + step] = lp
            z[row, lo:lo + step] = (lp - mu) / sigma
    return token_lp.float().cpu().numpy(), z.float().cpu().numpy()


@dataclass
class TokenScores:
    """Per text, per predicted token: log p(x_t|x<t) and Min-K%++'s (log p - mu) / sigma."""

    logprob: list[np.ndarray]
    zscore: list[np.ndarray]
    window: int
    n_windowed: int  # texts longer than one window


def token_scores(texts: Sequence[str], model: Any, tokenizer: Any, *, device: str = "cpu", batch_size: int = 8,
                 max_length: int | None = None, progress: Progress | None = None) -> TokenScores:
    """Score every predicted token of every text (no truncation: long texts in overlapping windows).

    Windows are batched with right padding and position ids 0..len-1 passed explicitly, so a token's
    score does not depend on the other texts in its batch (causal attention never sees the padding)."""
    import torch

    window = model_window(model, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    ids = [tokenizer(t)["input_ids"] for t in texts]
    jobs = [(i, b, e, s) for i, seq in enumerate(ids) for b, e, s in _windows(len(seq), window) if len(seq) >= 2]
    jobs.sort(key=lambda j: j[2] - j[1])  # similar lengths together: less padding
    lp_parts: list[list[tuple[int, np.ndarray]]] = [[] for _ in texts]
    z_parts: list[list[tuple[int, np.ndarray]]] = [[] for _ in texts]
    lo = 0
    while lo < len(jobs):
        # Jobs are sorted by length: the batch's width is its last job's; bound rows x width.
        n_rows = 1
        while n_rows < batch_size and lo + n_rows < len(jobs) and \
                (n_rows + 1) * (jobs[lo + n_rows][2] - jobs[lo + n_rows][1]) <= BATCH_TOKENS:
            n_rows += 1
        chunk = jobs[lo:lo + n_rows]
        lo += n_rows
        width = max(e - b for _, b, e, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (i, b, e, _) in enumerate(chunk):
            input_ids[row, :e - b] = torch.tensor(ids[i][b:e])
            mask[row, :e - b] = 1
        positions = torch.arange(width).expand(len(chunk), width)
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                           position_ids=positions.to(device)).logits[:, :-1]
            token_lp, z = _token_stats(logits, input_ids[:, 1:].to(device))
        for row, (i, b, e, s) in enumerate(chunk):
            # logits at position p predict token p + 1: tokens s..e-1 of the text are rows s-1-b..e-2-b.
            sl = slice(s - 1 - b, e - 1 - b)
            lp_parts[i].append((s, token_lp[row, sl]))
            z_parts[i].append((s, z[row, sl]))
        if progress:
            progress(lo, len(jobs))

    def joined(parts: list[tuple[int, np.ndarray]]) -> np.ndarray:
        return np.concatenate([a for _, a in sorted(parts, key=lambda x: x[0])]) if parts else np.empty(0)

    return TokenScores([joined(p) for p in lp_parts], [joined(p) for p in z_parts], window,
                       sum(1 for seq in ids if len(seq) > window))


def _check_k(k: float) -> None:
    if not 0 < k <= 1:
        raise ValueError(f"k is a fraction in (0, 1] (e.g. 0.2 for 20%), got {k}")


def min_k_prob(texts: Sequence[str], model: Any, tokenizer: Any, *, k: float = 0.2, device: str = "cpu",
               batch_size: int = 8, max_length: int | None = None, progress: Progress | None = None) -> np.ndarray:
    """Min-K% Prob per text (Shi et al. 2024): mean of the lowest floor(k x n) token log-probabilities (at
    least one); NaN for a text of fewer than 2 tokens."""
    _check_k(k)
    scores = token_scores(texts, model, tokenizer, device=device, batch_size=batch_size, max_length=max_length,
                          progress=progress)
    return np.array([lowest_k_mean(v, k) for v in scores.logprob])


def min_k_plus_plus(texts: Sequence[str], model: Any, tokenizer: Any, *, k: float = 0.2, device: str = "cpu",
                    batch_size: int = 8, max_length: int | None = None, progress: Progress | None = None) -> np.ndarray:
    """Min-K%++ per text (Zhang et al. 2024): mean of the lowest k% of per-token (log p - mu) / sigma."""
    _check_k(k)
    scores = token_scores(texts, model, tokenizer, device=device, batch_size=batch_size, max_length=max_length,
                          progress=progress)
    return np.array([lowest_k_mean(v, k) for v in scores.zscore])


def _texts_of(store: Store, dataset_id: int) -> pd.DataFrame:
    return store.query_df(f"SELECT s.id, s.dataset_id, {CONTENT_SQL} AS text FROM samples s "
                          "WHERE s.dataset_id = ? ORDER BY s.id", [dataset_id])


# ---- the run -----------------------------------------------------------------------------------------

def _eval_names(store: Store, against: Sequence[str] | None) -> list[str]:
    if against:
        for name in against:
            if not store.dataset(name).is_eval:
                raise ValueError(f"{name!r} is not marked as an evaluation set (load it with is_eval=True).")
        return list(against)
    names = store.query_df("SELECT name FROM datasets WHERE is_eval ORDER BY name")["name"].tolist()
    if not names:
        raise ValueError("No dataset in the store is marked as an evaluation set.")
    return names


def check_contamination(
    store: Store,
    dataset: str,
    against: Sequence[str] | None = None,
    *,
    methods: Sequence[str] = DEFAULT_METHODS,
    max_train_df: int = DEFAULTS["max_train_df"],
    palm_threshold: float = DEFAULTS["palm_threshold"],
    embed_threshold: float = DEFAULTS["embed_threshold"],
    embed_model: str | None = None,
    embed_text: str = DEFAULTS["embed_text"],
    mink_model: str | None = None,
    mink_k: float = DEFAULTS["mink_k"],
    mink_threshold: float | None = None,
    minkpp_threshold: float | None = None,
    mink_device: str = "auto",
    mink_max_length: int | None = None,
    batch_size: int = 5000,
    progress: Callable[[str, float], None] | None = None,
) -> ContaminationReport:
    """Check `dataset` against eval sets (all is_eval datasets when `against` is None); a recorded run.

    The n-gram and embedding methods flag training samples per eval set. Min-K% Prob and Min-K%++ score the
    eval items under `mink_model` (was this benchmark in that model's pre-training data?); their thresholds
    only count eval items at or above them, per eval set."""
    methods = list(dict.fromkeys(methods))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods must be among {', '.join(METHODS)}; got {', '.join(methods) or 'none'}")
    lm = [m for m in ("mink", "minkpp") if m in methods]
    if lm and not mink_model:
        raise ValueError("Min-K% Prob and Min-K%++ need a causal language model (name or local path).")
    if not 0.05 <= mink_k <= 0.6:
        raise ValueError(f"Min-K% k must be between 5% and 60% (0.05-0.6), got {mink_k}")
    info = store.dataset(dataset)
    eval_names = _eval_names(store, against)
    eval_infos = [store.dataset(n) for n in eval_names]
    params = {"against": eval_names, "methods": methods, "max_train_df": max_train_df,
              "palm_threshold": palm_threshold, "method_notes": {m: METHOD_NOTES[m] for m in methods}}
    if "embedding" in methods:
        params |= {"embed_threshold": embed_threshold, "embed_model": embed_model or "all-MiniLM-L6-v2",
                   "embed_text": embed_text}
    if lm:
        params |= {"mink_model": mink_model, "mink_k": mink_k, "mink_threshold": mink_threshold,
                   "minkpp_threshold": minkpp_threshold, "mink_device": mink_device,
                   "mink_max_length": mink_max_length, "mink_scored": "eval items"}
    say = progress or (lambda _stage, _frac: None)
    with store.run("contamination", params, dataset_id=info.dataset_id, model=mink_model if lm else None) as run:
        record = dict(params)  # the computation adds what it found (N per benchmark, capped n-grams, ...)
        results, items = _compute(store, info, eval_infos, methods, record, batch_size, say)
        run.set_metrics({k: v for k, v in record.items() if k not in params})
        _write(store, run, results, items)
        summary = eval_summary(store, run.run_id)
        run.finish(info.n_samples)
    say("done", 1.0)
    return ContaminationReport(run.run_id, dataset, eval_names, methods, info.n_samples, summary)


def _gpt3(store: Store, info, eval_items: pd.DataFrame, methods: list[str], params: dict[str, Any],
          batch_size: int, say: Callable[[str, float], None]) -> tuple[list[pd.DataFrame], pd.DataFrame]:
    """GPT-3 (N per benchmark) and PaLM (8-gram) overlap in one streaming pass over the training set."""
    hasher = textnorm.WordHasher()
    counts = eval_items["text"].map(lambda t: len(textnorm.gpt3_words(t)))
    n_of = {int(ds): gpt3_n(c.to_numpy()) for ds, c in counts.groupby(eval_items["dataset_id"])}
    evs: list[EvalNgrams] = []
    if "ngram13" in methods:
        params["gpt3_n"] = {str(ds): n for ds, n in n_of.items()}
        for n in sorted(set(n_of.values())):
            part = eval_items[eval_items["dataset_id"].map(n_of) == n]
            evs.append(build_eval_ngrams(part, n, hasher))
    if "ngram8" in methods:
        evs.append(build_eval_ngrams(eval_items, 8, hasher))
    hits, n_grams = scan_training(iter_texts(store, [info.dataset_id], batch_size), evs, hasher,
                                  lambda d, t: say("n-grams", d / max(t or 1, 1)), info.n_samples)
    parts, coverage, capped = [], None, []
    for k, (ev, h, c) in enumerate(zip(evs, hits, n_grams, strict=True)):
        if "ngram8" in methods and k == len(evs) - 1:
            res8, coverage = ngram8_results(h, ev, c)
            parts.append(res8)
        else:
            res, cap = ngram13_results(h, ev, params["max_train_df"])
            parts.append(res)
            capped.append(cap)
    if "ngram13" in methods:
        params["capped"] = _capped_record(pd.concat(capped, ignore_index=True), eval_items)
    return parts, coverage


def _capped_record(capped: pd.DataFrame, eval_items: pd.DataFrame) -> dict[str, Any]:
    """GPT-3's frequency cap made visible: per eval set how many n-grams and eval items it hid, and the
    first CAPPED_LISTED (n-gram, eval item) pairs with the n-gram's words, most duplicated first."""
    if capped.empty:
        return {"per_eval_set": {}, "listed": []}
    per = capped.groupby("eval_ds").agg(n_ngrams=("eval_start", "size"), n_eval_items=("eval_id", "nunique"))
    top = capped.sort_values(["n_train_samples", "eval_id", "eval_start"], ascending=[False, True, True])
    top = top.head(CAPPED_LISTED)
    text_of = dict(zip(eval_items["id"], eval_items["text"], strict=True))
    listed = [{"eval_dataset_id": int(r.eval_ds), "eval_sample_id": int(r.eval_id), "n_train_samples":
               int(r.n_train_samples), "ngram": " ".join(textnorm.gpt3_words(text_of[r.eval_id])[
                   int(r.eval_start):int(r.eval_start) + int(r.n)])} for r in top.itertuples()]
    return {"per_eval_set": {str(int(ds)): {"n_ngrams": int(r.n_ngrams), "n_eval_items": int(r.n_eval_items)}
                             for ds, r in per.iterrows()}, "listed": listed}


def _lm_scores(eval_items: pd.DataFrame, items: pd.DataFrame, methods: list[str], params: dict[str, Any],
               say: Callable[[str, float], None]) -> pd.DataFrame:
    """Min-K% Prob and Min-K%++ of every eval item (one forward pass per window serves both)."""
    say("Min-K% Prob", 0.0)
    model, tokenizer, device = load_causal_lm(params["mink_model"], params.get("mink_device", "auto"))
    scores = token_scores(eval_items["text"].tolist(), model, tokenizer, device=device,
                          max_length=params.get("mink_max_length"),
                          progress=lambda d, t: say("Min-K% Prob", d / max(t or 1, 1)))
    params |= {"mink_window": scores.window, "mink_stride": max(1, scores.window // 2),
               "mink_n_windowed": scores.n_windowed}
    k = params["mink_k"]
    if "mink" in methods:
        items["mink_score"] = [lowest_k_mean(v, k) for v in scores.logprob]
    if "minkpp" in methods:
        pp = [lowest_k_mean(v, k) for v in scores.zscore]
        params["minkpp_scores"] = {str(int(i)): (None if math.isnan(x) else round(x, 6))
                                   for i, x in zip(items["eval_id"], pp, strict=True)}
    return items


class _Stopped(Exception):
    """The n-gram stage failed or was cancelled: the embedding stage running beside it stops too."""


def _compute(store: Store, info, eval_infos, methods: list[str], params: dict[str, Any], batch_size: int,
             say: Callable[[str, float], None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    eval_items = pd.concat([_texts_of(store, e.dataset_id) for e in eval_infos], ignore_index=True)
    keys = ["train_id", "eval_ds"]
    parts: list[pd.DataFrame] = []
    items = eval_items[["id", "dataset_id"]].rename(columns={"id": "eval_id", "dataset_id": "eval_ds"})
    # The embedding stage (model load or ONNX export, then onnxruntime, which releases the GIL) runs in a
    # thread beside the n-gram stage (one core of Python and numpy): neither's answer depends on the other.
    stop = threading.Event()
    embedding = None
    if "embedding" in methods:
        say("embeddings", 0.0)

        def told(done: int, total: int) -> None:
            if stop.is_set():
                raise _Stopped
            say(f"embedding {done:,}/{total:,} texts", done / max(total, 1))

        pool = ThreadPoolExecutor(1, thread_name_prefix="contamination-embed")
        embedding = pool.submit(embedding_results, store, info.name, [e.name for e in eval_infos],
                                model=params["embed_model"], text=params["embed_text"], progress=told)
        pool.shutdown(wait=False)  # the submitted stage still runs; the thread ends with it
    try:
        if "ngram13" in methods or "ngram8" in methods:
            say("n-grams", 0.0)
            found, coverage = _gpt3(store, info, eval_items, methods, params, batch_size, say)
            parts += found
            if coverage is not None:
                items = items.merge(coverage, on="eval_id", how="left")
    except BaseException:
        stop.set()
        if embedding is not None:
            wait([embedding])
        raise
    if embedding is not None:
        emb, runs = embedding.result()
        params["embed_runs"] = runs
        parts.append(emb)
    if "mink" in methods or "minkpp" in methods:
        items = _lm_scores(eval_items, items, methods, params, say)
    results = pd.DataFrame({"train_id": pd.Series(dtype="int64"), "eval_ds": pd.Series(dtype="int64")})
    for part in parts:
        part = part.astype({"train_id": "int64", "eval_ds": "int64"})
        results = results.merge(part, on=keys, how="outer")
    return _flag(results, params, methods), items


def _flag(results: pd.DataFrame, params: dict[str, Any], methods: list[str]) -> pd.DataFrame:
    df = results.copy()
    for col in ["ngram13_eval_id", "ngram13_hits", "ngram13_starts", "ngram8_eval_id", "ngram8_train_frac",
                "ngram8_eval_frac", "ngram8_starts", "embed_eval_id", "embed_cosine", "mink_score"]:
        if col not in df.columns:
            df[col] = None
    df["flag_ngram13"] = df["ngram13_hits"].fillna(0).astype(float) > 0
    palm = params["palm_threshold"]
    df["flag_ngram8"] = (df["ngram8_train_frac"].astype(float).fillna(0) >= palm) | (
        df["ngram8_eval_frac"].astype(float).fillna(0) >= palm)
    df["flag_embedding"] = df["embed_cosine"].astype(float).fillna(-1) >= params.get("embed_threshold", 2.0)
    df["flag_mink"] = False  # Min-K% scores eval items (the model's pre-training), never training samples
    df["contaminated"] = df[["flag_ngram13", "flag_ngram8", "flag_embedding"]].any(axis=1)
    return df


def _spans(store: Store, df: pd.DataFrame, gpt3_n_of: dict[str, int]) -> pd.DataFrame:
    """Character spans of matched n-grams, for the samples that have any (one text fetch for all of them)."""
    need = df.loc[df["ngram13_starts"].notna() | df["ngram8_starts"].notna(), "train_id"].unique().tolist()
    df["ngram13_spans"] = None
    df["ngram8_spans"] = None
    if not need:
        return df
    texts = store.query_df(f"SELECT s.id, {CONTENT_SQL} AS text FROM samples s WHERE list_contains(?, s.id)",
                           [[int(x) for x in need]])
    spans_of = {int(i): textnorm.gpt3_word_spans(t)[1] for i, t in zip(texts["id"], texts["text"], strict=True)}
    for col in ("ngram13", "ngram8"):
        sizes = [gpt3_n_of.get(str(int(e)), 13) if col == "ngram13" else 8 for e in df["eval_ds"]]
        df[f"{col}_spans"] = [
            json.dumps(textnorm.merge_spans(s, n, spans_of.get(int(t), []))) if isinstance(s, list) else None
            for t, s, n in zip(df["train_id"], df[f"{col}_starts"], sizes, strict=True)]
    return df


def _write(store: Store, run: Run, results: pd.DataFrame, items: pd.DataFrame) -> None:
    run_id = run.run_id
    df = _spans(store, results, run.metrics.get("gpt3_n", {}))

    def col(name: str, typ: pa.DataType) -> pa.Array:
        values = df[name].astype(object).where(df[name].notna(), None).tolist()
        return pa.array(values, type=typ)

    table = pa.table({
        "sample_id": col("train_id", pa.int64()), "eval_dataset_id": col("eval_ds", pa.int32()),
        "ngram13_eval_id": col("ngram13_eval_id", pa.int64()), "ngram13_hits": col("ngram13_hits", pa.int32()),
        "ngram13_spans": col("ngram13_spans", pa.string()), "ngram8_eval_id": col("ngram8_eval_id", pa.int64()),
        "ngram8_train_frac": col("ngram8_train_frac", pa.float64()),
        "ngram8_eval_frac": col("ngram8_eval_frac", pa.float64()), "ngram8_spans": col("ngram8_spans", pa.string()),
        "embed_eval_id": col("embed_eval_id", pa.int64()), "embed_cosine": col("embed_cosine", pa.float64()),
        "mink_score": col("mink_score", pa.float64()), "flag_ngram13": col("flag_ngram13", pa.bool_()),
        "flag_ngram8": col("flag_ngram8", pa.bool_()), "flag_embedding": col("flag_embedding", pa.bool_()),
        "flag_mink": col("flag_mink", pa.bool_()), "contaminated": col("contaminated", pa.bool_()),
    })
    for name in ("ngram8_coverage", "mink_score"):
        if name not in items.columns:
            items[name] = None
    item_table = pa.table({
        "eval_dataset_id": pa.array(items["eval_ds"].to_numpy(np.int64), pa.int32()),
        "eval_sample_id": pa.array(items["eval_id"].to_numpy(np.int64), pa.int64()),
        "ngram8_coverage": pa.array(items["ngram8_coverage"].astype(object).where(items["ngram8_coverage"].notna(),
                                                                                  None).tolist(), pa.float64()),
        "mink_score": pa.array(items["mink_score"].astype(object).where(items["mink_score"].notna(), None).tolist(),
                               pa.float64()),
    })
    with store.transaction() as con:
        con.register("new_results", table)
        con.execute("INSERT INTO contamination_results SELECT ?, * FROM new_results", [run_id])
        con.unregister("new_results")
        con.register("new_items", item_table)
        con.execute(
            "INSERT INTO contamination_eval_items SELECT ?, i.eval_dataset_id, i.eval_sample_id, "
            "(SELECT count(DISTINCT r.sample_id) FROM contamination_results r WHERE r.run_id = ? AND r.contaminated "
            " AND i.eval_sample_id IN (r.ngram13_eval_id, r.ngram8_eval_id, r.embed_eval_id) "
            " AND (r.flag_ngram13 AND r.ngram13_eval_id = i.eval_sample_id OR r.flag_ngram8 AND r.ngram8_eval_id = "
            "  i.eval_sample_id OR r.flag_embedding AND r.embed_eval_id = i.eval_sample_id)), "
            "i.ngram8_coverage, i.mink_score FROM new_items i", [run_id, run_id])
        con.unregister("new_items")
        # The record of what was done (derived N per benchmark, capped n-grams, windows, Min-K%++ scores),
        # with the results: the summary and method lines read it through run_params.
        run.save_metrics(con=con)


# ---- reading results ---------------------------------------------------------------------------------

def contamination_runs(store: Store, dataset: str | None = None) -> pd.DataFrame:
    sql = ("SELECT r.run_id, d.name AS dataset, r.status, r.params, r.started_at, r.n_samples FROM runs r "
           "JOIN datasets d USING (dataset_id) WHERE r.kind = 'contamination'")
    params: list[Any] = []
    if dataset:
        sql += " AND d.name = ?"
        params.append(dataset)
    return store.query_df(sql + " ORDER BY r.run_id DESC", params)


def results(store: Store, run_id: int, *, flagged_only: bool = False) -> pd.DataFrame:
    """Per (training sample, eval set) results of a run, keyed by sample id, with the eval set's name."""
    sql = ("SELECT r.*, d.name AS eval_set FROM contamination_results r JOIN datasets d "
           "ON d.dataset_id = r.eval_dataset_id WHERE r.run_id = ?" + (" AND r.contaminated" if flagged_only else "") +
           " ORDER BY r.contaminated DESC, r.ngram13_hits DESC NULLS LAST, r.embed_cosine DESC NULLS LAST, r.sample_id")
    return store.query_df(sql, [run_id])


def run_params(store: Store, run_id: int) -> dict[str, Any]:
    """A run's record: the parameters it started with and what it found on the way (its metrics: N per
    benchmark, capped n-grams, Min-K% windows and scores; runs before migration 0011 kept these in params)."""
    df = store.query_df("SELECT params, metrics FROM runs WHERE run_id = ?", [run_id])
    if df.empty:
        raise KeyError(f"No run {run_id}")
    record = {}
    for raw in (df["params"].iloc[0], df["metrics"].iloc[0]):
        record |= json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    return record


def eval_summary(store: Store, run_id: int) -> pd.DataFrame:
    """Per eval set: training samples flagged by each method, eval items hit, GPT-3's N and what its cap hid,
    and the eval items' Min-K% / Min-K%++ under the run's LM (mean, and how many reach the threshold)."""
    params = run_params(store, run_id)
    summary = store.query_df(
        """
        WITH r AS (SELECT * FROM contamination_results WHERE run_id = ?),
             per AS (SELECT eval_dataset_id,
                            count(DISTINCT sample_id) FILTER (WHERE flag_ngram13) AS n_ngram13,
                            count(DISTINCT sample_id) FILTER (WHERE flag_ngram8) AS n_ngram8,
                            count(DISTINCT sample_id) FILTER (WHERE flag_embedding) AS n_embedding,
                            count(DISTINCT sample_id) FILTER (WHERE contaminated) AS n_contaminated
                     FROM r GROUP BY eval_dataset_id),
             items AS (SELECT eval_dataset_id, count(*) AS n_eval_items,
                              count(*) FILTER (WHERE n_train_hits > 0) AS n_eval_items_hit,
                              avg(ngram8_coverage) AS mean_ngram8_coverage,
                              count(*) FILTER (WHERE ngram8_coverage >= 0.7) AS n_eval_items_palm,
                              avg(mink_score) AS eval_mink_mean,
                              count(*) FILTER (WHERE mink_score >= ?) AS n_eval_items_mink
                       FROM contamination_eval_items WHERE run_id = ? GROUP BY eval_dataset_id)
        SELECT i.eval_dataset_id, d.name AS eval_set, i.n_eval_items, coalesce(p.n_contaminated, 0) AS n_contaminated,
               coalesce(p.n_ngram13, 0) AS n_ngram13, coalesce(p.n_ngram8, 0) AS n_ngram8,
               coalesce(p.n_embedding, 0) AS n_embedding, i.n_eval_items_hit, i.n_eval_items_palm,
               i.mean_ngram8_coverage, i.eval_mink_mean, i.n_eval_items_mink
        FROM items i JOIN datasets d ON d.dataset_id = i.eval_dataset_id
        LEFT JOIN per p USING (eval_dataset_id) ORDER BY d.name
        """, [run_id, params.get("mink_threshold") if params.get("mink_threshold") is not None else float("inf"),
              run_id])
    ds = summary["eval_dataset_id"].astype(str)
    summary["gpt3_n"] = ds.map(params.get("gpt3_n", {})).astype("Int64")
    capped = params.get("capped", {}).get("per_eval_set", {})
    summary["n_capped_ngrams"] = ds.map(lambda d: capped.get(d, {}).get("n_ngrams", 0)).astype(int)
    summary["n_eval_items_capped"] = ds.map(lambda d: capped.get(d, {}).get("n_eval_items", 0)).astype(int)
    pp = eval_item_scores(store, run_id)
    thr = params.get("minkpp_threshold")
    by_set = pp.groupby("eval_dataset_id")["minkpp_score"]
    summary["eval_minkpp_mean"] = summary["eval_dataset_id"].map(by_set.mean())
    summary["n_eval_items_minkpp"] = summary["eval_dataset_id"].map(
        by_set.apply(lambda s: int((s >= thr).sum()) if thr is not None else 0)).fillna(0).astype(int)
    return summary.drop(columns=["eval_dataset_id"])


def eval_item_scores(store: Store, run_id: int, eval_set: str | None = None) -> pd.DataFrame:
    """Per eval item: Min-K% Prob and Min-K%++ under the run's LM (NaN where not computed), and training
    samples flagged against it."""
    df = _eval_items(store, run_id, eval_set, "i.eval_dataset_id, d.name AS eval_set, i.eval_sample_id, "
                     "i.mink_score, i.n_train_hits", order="i.eval_dataset_id, i.eval_sample_id")
    pp = run_params(store, run_id).get("minkpp_scores", {})
    df["minkpp_score"] = df["eval_sample_id"].map(lambda i: pp.get(str(int(i)))).astype(float)
    return df


def capped_ngrams(store: Store, run_id: int) -> pd.DataFrame:
    """N-grams GPT-3's frequency cap ignored, with the eval item each belongs to (most duplicated first)."""
    listed = run_params(store, run_id).get("capped", {}).get("listed", [])
    df = pd.DataFrame(listed, columns=["eval_dataset_id", "eval_sample_id", "n_train_samples", "ngram"])
    names = store.query_df("SELECT dataset_id AS eval_dataset_id, name AS eval_set FROM datasets")
    return df.merge(names, on="eval_dataset_id", how="left")


def eval_items_hit(store: Store, run_id: int, eval_set: str | None = None) -> pd.DataFrame:
    return _eval_items(store, run_id, eval_set, "i.*, d.name AS eval_set", where="i.n_train_hits > 0",
                       order="i.n_train_hits DESC, i.eval_sample_id")


def _eval_items(store: Store, run_id: int, eval_set: str | None, columns: str, *, order: str,
                where: str = "true") -> pd.DataFrame:
    """A run's eval-item rows with their eval set's name, of one eval set where given (bound parameters)."""
    sql = (f"SELECT {columns} FROM contamination_eval_items i JOIN datasets d ON d.dataset_id = i.eval_dataset_id "
           f"WHERE i.run_id = ? AND {where}")
    params: list[Any] = [run_id]
    if eval_set:
        sql += " AND d.name = ?"
        params.append(eval_set)
    return store.query_df(f"{sql} ORDER BY {order}", params)


def flagged_ids(store: Store, run_id: int) -> set[int]:
    df = store.query_df("SELECT DISTINCT sample_id FROM contamination_results WHERE run_id = ? AND contaminated",
                        [run_id])
    return {int(x) for x in df["sample_id"]}


@dataclass(frozen=True)
class Evidence:
    """What to show beside a flagged sample: the evaluation item of the method that flagged it (None for
    Min-K%, which scores the sample alone) and the sample's character spans shared with that item."""

    method: str | None
    eval_id: int | None
    spans: list[list[int]]


_EVAL_ID = {"ngram13": "ngram13_eval_id", "ngram8": "ngram8_eval_id", "embedding": "embed_eval_id"}


def _present(value: Any) -> bool:
    """False for None, NaN and pd.NA: the n-gram columns of a sample no n-gram matched are SQL NULLs,
    which come back as pd.NA in nullable integer columns (and `pd.NA == pd.NA` cannot be truth-tested)."""
    return not (value is None or bool(pd.isna(value)))


def evidence(row: pd.Series | dict[str, Any]) -> Evidence:
    """The drill-down of one row of `results`: a method that flagged it first (13-gram, 8-gram, embedding),
    else any method that found an item; spans from the n-gram method that matched that same item."""
    get = row.get
    found = [m for m, col in _EVAL_ID.items() if _present(get(col))]
    flagged = [m for m in found if _present(get(f"flag_{m}")) and bool(get(f"flag_{m}"))]
    method = (flagged or found or [None])[0]
    if method is None:
        return Evidence(None, None, [])
    eval_id = int(get(_EVAL_ID[method]))
    spans: list[list[int]] = []
    for m in ("ngram13", "ngram8"):
        text = get(f"{m}_spans")
        if _present(get(_EVAL_ID[m])) and int(get(_EVAL_ID[m])) == eval_id and isinstance(text, str):
            spans = json.loads(text)
            break
    return Evidence(method, eval_id, spans)


def sample_text(store: Store, sample_id: int) -> str:
    """The text offsets refer to: the sample's turns joined by newlines."""
    df = store.query_df(f"SELECT {CONTENT_SQL} AS text FROM samples s WHERE s.id = ?", [int(sample_id)])
    if df.empty:
        raise KeyError(f"No sample {sample_id}")
    return str(df["text"].iloc[0])


def highlight_html(text: str, spans: Sequence[Sequence[int]]) -> str:
    """The text with spans marked; every piece of dataset text is escaped before it is wrapped in markup."""
    import html

    out, pos = [], 0
    for start, end in sorted((int(s), int(e)) for s, e in spans):
        if start < pos:
            start = pos
        if end <= start:
            continue
        out.append(html.escape(text[pos:start]))
        out.append(f'<mark style="background:#ffd54f">{html.escape(text[start:end])}</mark>')
        pos = end
    out.append(html.escape(text[pos:]))
    return '<div style="white-space:pre-wrap;font-family:monospace;font-size:0.85em">' + "".join(out) + "</div>"


def summary_figure(summary: pd.DataFrame):  # noqa: ANN201 - plotly figure
    """Bar chart per eval set: training samples flagged by each method."""
    import plotly.graph_objects as go

    fig = go.Figure()
    labels = {"n_ngram13": "n-gram (GPT-3)", "n_ngram8": "8-gram (PaLM)", "n_embedding": "embedding"}
    for col, label in labels.items():
        fig.add_bar(name=label, x=summary["eval_set"], y=summary[col])
    fig.update_layout(barmode="group", yaxis_title="training samples flagged", height=360,
                      margin={"l": 40, "r": 10, "t": 30, "b": 40}, legend_orientation="h")
    return fig


def cosine_figure(results: pd.DataFrame, eval_set: str, threshold: float = DEFAULTS["embed_threshold"]):  # noqa: ANN201
    """Histogram of each training sample's cosine to its nearest item of one eval set, with the flag line."""
    import plotly.graph_objects as go

    cos = results["embed_cosine"].dropna().astype(float) if "embed_cosine" in results else pd.Series(dtype=float)
    fig = go.Figure(go.Histogram(x=cos, nbinsx=50, name="training samples"))
    fig.add_vline(x=threshold, line_dash="dash", line_color="red", annotation_text="flag")
    fig.update_layout(title=f"Nearest {eval_set} item: cosine", xaxis_title="cosine", yaxis_title="training samples",
                      height=300, margin={"l": 40, "r": 10, "t": 40, "b": 40})
    if cos.empty:
        fig.add_annotation(text="no embedding check in this run", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")
    return fig


def method_lines(store: Store, run_id: int) -> list[str]:
    """One line per method of the run: what made the score, the paper, and any deviation."""
    params = run_params(store, run_id)
    methods = params.get("methods", [])
    notes = params.get("method_notes") or {m: METHOD_NOTES[m] for m in methods if m in METHOD_NOTES}
    if "ngram13" in methods and "gpt3_n" not in params:
        notes["ngram13"] = ("13-gram overlap, older run: fixed N = 13 and the project's word splitting, not GPT-3's "
                            "N per benchmark and normalisation; capped n-grams not recorded.")
    if set(methods) & {"mink", "minkpp"} and "mink_scored" not in params:
        notes["mink"] = ("Min-K% Prob, older run: scored training samples too and counted k by ceiling, with "
                         "truncation at 512 tokens; not the paper's definition.")
    lines = [notes[m] for m in methods if m in notes]
    if "mink_window" in params:
        lines.append(f"Min-K% under {params.get('mink_model')}: k = {params.get('mink_k')}, window "
                     f"{params['mink_window']} tokens (stride {params['mink_stride']}), "
                     f"{params.get('mink_n_windowed', 0)} eval items longer than one window.")
    return lines
