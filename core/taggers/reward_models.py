"""Response quality from reward models: any transformers sequence-classification model by name or path
(for example the ones Magpie and the TuluTalk study used, such as FsfairX-LLaMA3-RM or
Skywork-Reward-Llama-3.1-8B), batched by length, on GPU in bf16 when present. A multi-turn conversation
gets one score for the whole conversation.

Ensembles. Single reward models are over-optimised, so several can be combined conservatively (Coste et
al., 2024): each model's rewards are standardised over the run's samples, then aggregated per sample by
the worst case (min) or by mean - k * std. Per-model raw rewards are kept as `reward:<i>` tags; the
aggregate is written as `response_quality` when the run finishes (so a resumed run aggregates everything).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.store import Store
from core.taggers.base import Tagger, row

AGGREGATIONS = ("min", "mean_minus_std")
MAX_LENGTH = 2048


def pick_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class RewardModel:
    def __init__(self, model: str, *, device: str = "auto", batch_size: int | None = None,
                 max_length: int = MAX_LENGTH, dtype: str | None = None) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.name, self.device = model, pick_device(device)
        on_gpu = self.device.startswith("cuda")
        self.dtype = dtype or ("bf16" if on_gpu else "fp32")
        self.batch_size = batch_size or (16 if on_gpu else 4)
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        torch_dtype = torch.bfloat16 if self.dtype == "bf16" else torch.float32
        self.model = AutoModelForSequenceClassification.from_pretrained(model, dtype=torch_dtype).to(self.device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def render(self, conversation: list[dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(conversation, tokenize=False)
        return "\n\n".join(f"{t['role']}: {t['content']}" for t in conversation)

    def score(self, conversations: Sequence[list[dict[str, str]]]) -> np.ndarray:
        """One reward per conversation: the single logit (num_labels 1), else last minus first logit."""
        import torch

        texts = [self.render(c) for c in conversations]
        order = np.argsort([len(t) for t in texts], kind="stable")[::-1]  # longest first: OOM shows early
        out = np.zeros(len(texts), dtype=np.float64)
        for start in range(0, len(texts), self.batch_size):
            idx = order[start:start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_length).to(self.device)
            with torch.no_grad():
                logits = self.model(**enc).logits.float()
            vals = logits[:, 0] if logits.shape[1] == 1 else logits[:, -1] - logits[:, 0]
            out[idx] = vals.cpu().numpy()
        return out


def aggregate(scores: np.ndarray, how: str = "min", k: float = 1.0) -> np.ndarray:
    """Conservative aggregate of an (n samples x m models) matrix of rewards, standardised per model."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}")
    z = (scores - scores.mean(axis=0)) / np.where(scores.std(axis=0) > 0, scores.std(axis=0), 1.0)
    if scores.shape[1] == 1:
        return scores[:, 0]
    return z.min(axis=1) if how == "min" else z.mean(axis=1) - k * z.std(axis=1)


class RewardModelTagger(Tagger):
    def __init__(self, models: Sequence[str], *, aggregation: str = "min", k: float = 1.0, device: str = "auto",
                 batch_size: int | None = None) -> None:
        if not models:
            raise ValueError("name at least one reward model")
        self.names, self.aggregation, self.k = list(models), aggregation, k
        self.device, self.batch_size = device, batch_size
        self.loaded: list[RewardModel] = []
        self.tags = ["response_quality"] + ([f"reward:{i}" for i in range(len(models))] if len(models) > 1 else [])
        self.method = (f"reward model {models[0]}" if len(models) == 1 else
                       f"ensemble of {len(models)} reward models ({', '.join(models)}), standardised, "
                       f"aggregated by {aggregation}" + (f" (k={k})" if aggregation == "mean_minus_std" else ""))

    def prepare(self, store: Store, ids: Sequence[int], progress: Any = None) -> dict[str, Any]:
        self.loaded = [RewardModel(m, device=self.device, batch_size=self.batch_size) for m in self.names]
        return {"response_quality": {"method": self.method, "accuracy": None,
                                     "measured_on": "not measured here (see each model's own evaluation)",
                                     "device": self.loaded[0].device, "dtype": self.loaded[0].dtype}}

    def tag(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        has = [any(t["role"] == "assistant" for t in m) for m in batch["messages"]]
        convs = [m for m, h in zip(batch["messages"], has, strict=True) if h]
        ids = [s for s, h in zip(batch["sample_id"], has, strict=True) if h]
        rows = [row(s, t, status="not_computed", detail="no assistant response to score", method=self.method)
                for s, h in zip(batch["sample_id"], has, strict=True) if not h for t in self.tags]
        if not convs:
            return rows
        scores = [m.score(convs) for m in self.loaded]
        if len(scores) == 1:
            return rows + [row(s, "response_quality", score=v, method=self.method) for s, v in zip(ids, scores[0], strict=True)]
        for i, (name, vals) in enumerate(zip(self.names, scores, strict=True)):
            rows += [row(s, f"reward:{i}", score=v, detail=name, method=f"reward model {name}")
                     for s, v in zip(ids, vals, strict=True)]
        return rows

    def finish(self, store: Store, run_id: int) -> None:
        """Aggregate the per-model rewards of the whole run into response_quality."""
        if len(self.names) == 1:
            return
        from core.tags import write_tags

        long = store.query_df("SELECT sample_id, tag, score FROM tags WHERE run_id = ? AND tag LIKE 'reward:%' "
                              "AND status = 'ok'", [run_id])
        if long.empty:
            return
        wide = long.pivot(index="sample_id", columns="tag", values="score").dropna()
        agg = aggregate(wide.to_numpy(), self.aggregation, self.k)
        with store.transaction() as con:
            con.execute("DELETE FROM tags WHERE run_id = ? AND tag = 'response_quality' AND status = 'ok'", [run_id])
        write_tags(store, run_id, pd.DataFrame(
            [row(s, "response_quality", score=v, method=self.method) for s, v in zip(wide.index, agg, strict=True)]))
