"""An offline response-quality proxy: a Bradley-Terry head on sentence embeddings.

Trained from any preference dataset in the store (samples with `rejected`: for example the shared
hh-rlhf pairs). Each side of a pair is represented by the embedding of its last exchange (the last user
turn, cut, and the assistant's answer), and P(chosen beats rejected) = sigmoid(w . (e_chosen - e_rejected)),
fitted as a logistic regression without intercept on both orientations of every training pair. A
held-out split of pairs gives the pairwise accuracy that every tag it makes reports. The reward of a
sample is w . e(sample): comparable within one proxy, not across proxies, and a proxy of what the pairs
preferred (for hh-rlhf-harmless: harmlessness), not of general quality. It is stored as the tag
`preference_proxy`, with the preference dataset it was trained on in its method, never as
`response_quality` (which means a reward model's score, as in Magpie).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.store.database import Store
from core.tags.taggers import vectors
from core.tags.taggers.base import Tagger, _turns, last_exchange, row
from core.tags.taggers.learned import TagModel, save_model

TAG = "preference_proxy"


def preference_pairs(store: Store, dataset: str, max_pairs: int | None = None) -> pd.DataFrame:
    """(sample_id, chosen, rejected) texts of a preference dataset; pairs without two answers dropped."""
    df = store.query_df(
        "SELECT s.id AS sample_id, s.messages, s.rejected FROM samples s JOIN datasets d USING (dataset_id) "
        "WHERE d.name = ? AND s.rejected IS NOT NULL ORDER BY s.id", [dataset])
    if df.empty:
        raise ValueError(f"dataset {dataset!r} has no preference pairs (no rejected conversations)")
    df["chosen"] = df["messages"].map(lambda m: last_exchange(_turns(m)))
    df["rejected"] = df["rejected"].map(lambda m: last_exchange(_turns(m)))
    df = df.dropna(subset=["chosen", "rejected"])
    df = df[df["chosen"] != df["rejected"]]
    if max_pairs is not None and len(df) > max_pairs:
        df = df.sample(max_pairs, random_state=0).sort_values("sample_id")
    return df[["sample_id", "chosen", "rejected"]].reset_index(drop=True)


def preference_datasets(store: Store) -> list[str]:
    """The datasets that hold preference pairs (samples with a rejected answer), by name."""
    return store.query_df("SELECT DISTINCT d.name FROM samples s JOIN datasets d USING (dataset_id) "
                          "WHERE s.rejected IS NOT NULL ORDER BY 1")["name"].tolist()


def fit_bradley_terry(diff: np.ndarray, c: float = 1.0) -> np.ndarray:
    """w such that sigmoid(w . d) = P(first preferred), from difference vectors d of preferred - other."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([diff, -diff])
    y = np.concatenate([np.ones(len(diff)), np.zeros(len(diff))])
    clf = LogisticRegression(C=c, fit_intercept=False, max_iter=2000).fit(x, y)
    return clf.coef_[0]


def train_reward_proxy(store: Store, dataset: str, *, embed_model: str | None = None, test_frac: float = 0.2,
                       max_pairs: int | None = None, c: float = 1.0, seed: int = 0,
                       progress: Any = None) -> TagModel:
    """Train and store a Bradley-Terry proxy (a recorded 'tag_model' run); held-out accuracy in metrics."""
    params = {"kind": "reward_proxy", "dataset": dataset, "embed_model": vectors.model_name(embed_model),
              "test_frac": test_frac, "max_pairs": max_pairs, "C": c, "seed": seed}
    with store.run("tag_model", params, dataset=dataset, model=vectors.model_name(embed_model),
                   sample_filter=f"pairs of {dataset}") as run:
        pairs = preference_pairs(store, dataset, max_pairs)
        if progress:
            progress(0, 2 * len(pairs))
        emb = vectors.encode(list(pairs["chosen"]) + list(pairs["rejected"]), embed_model, store)
        diff = emb[: len(pairs)] - emb[len(pairs):]
        rng = np.random.default_rng(seed)
        test = rng.random(len(pairs)) < test_frac
        w = fit_bradley_terry(diff[~test], c)
        metrics = {
            "heldout_pairwise_accuracy": float(np.mean(diff[test] @ w > 0)),
            "train_pairwise_accuracy": float(np.mean(diff[~test] @ w > 0)),
            "n_train_pairs": int((~test).sum()), "n_test_pairs": int(test.sum()), "chance": 0.5,
            "measured_on": f"{int(test.sum())} held-out pairs of {dataset} (random {test_frac:.0%} split)",
        }
        metrics["accuracy"] = metrics["heldout_pairwise_accuracy"]
        metrics["trained_on"] = dataset
        model = TagModel(run.run_id, "reward_proxy", TAG, vectors.model_name(embed_model),
                         "last_exchange", [], w.reshape(1, -1), np.zeros(1), metrics)
        save_model(store, model)
        run.set_metrics(metrics)
        run.finish(len(pairs))
        if progress:
            progress(2 * len(pairs), 2 * len(pairs))
    return model


def latest_proxy(store: Store) -> int | None:
    """The newest finished reward proxy's run id, or None."""
    df = store.query_df("SELECT m.run_id FROM tag_models m JOIN runs r USING (run_id) WHERE m.kind = 'reward_proxy' "
                        "AND r.status = 'finished' ORDER BY m.run_id DESC LIMIT 1")
    return None if df.empty else int(df["run_id"][0])


class ProxyTagger(Tagger):
    """preference_proxy = the proxy's reward of the last exchange; not computed without an answer."""

    tags = [TAG]
    source = ("Bradley-Terry preference model, as reward models are trained (Ouyang et al. 2022); deviation: a "
              "linear head on frozen sentence embeddings, not a fine-tuned language model")

    def __init__(self, model: TagModel) -> None:
        self.model = model
        self.trained_on = trained_on(model)
        acc = model.metrics.get("heldout_pairwise_accuracy")
        self.method = (f"Bradley-Terry preference proxy (logistic regression on {model.embed_model} embeddings) "
                       f"trained on the preference pairs of {self.trained_on} (tag model run {model.run_id}, "
                       f"held-out pairwise accuracy {acc:.3f}): it scores what those pairs preferred, "
                       "not general response quality (Magpie's response quality is a reward model's score)")
        self.store: Store | None = None

    def prepare(self, store: Store, ids: Sequence[int], progress: Any = None) -> dict[str, Any]:
        self.store = store
        return {TAG: {"method": self.method, "trained_on": self.trained_on, **self.model.metrics}}

    def tag(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        texts = [last_exchange(m) for m in batch["messages"]]
        have = [i for i, t in enumerate(texts) if t]
        scores = np.full(len(texts), np.nan)
        if have:
            vecs = vectors.encode([texts[i] for i in have], self.model.embed_model, self.store)
            scores[have] = vecs @ self.model.coef[0]
        return [row(sid, TAG, score=s, method=self.method) if t else
                row(sid, TAG, status="not_computed", method=self.method, detail="no assistant response to score")
                for sid, t, s in zip(batch["sample_id"], texts, scores, strict=True)]


def trained_on(model: TagModel) -> str:
    """The preference dataset a proxy was trained on (older proxies: from their 'measured on' text)."""
    if model.metrics.get("trained_on"):
        return str(model.metrics["trained_on"])
    measured = str(model.metrics.get("measured_on", ""))
    return measured.split(" of ", 1)[1].split(" (", 1)[0] if " of " in measured else "an unrecorded dataset"
