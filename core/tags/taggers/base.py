"""What every tagger shares: the batch of samples it sees, the rows it returns, and the honest
'not computed' tagger for tags a backend cannot make."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.store.database import Store

INSTRUCTION_CHARS = 4000  # long prompts are cut here before they reach a model


def load_samples(store: Store, ids: Sequence[int]) -> pd.DataFrame:
    """Samples by id (in id order) with the fields taggers read: messages as lists of dicts, the first
    user turn (`instruction`), the last assistant turn (`response`), the number of user turns."""
    df = store.query_df(
        "SELECT s.id AS sample_id, d.name AS dataset, s.messages, s.rejected, s.text, s.n_turns, s.n_chars, "
        "s.n_tokens, s.meta FROM samples s JOIN datasets d USING (dataset_id) "
        "WHERE s.id IN (SELECT unnest(?::BIGINT[])) ORDER BY s.id", [[int(i) for i in ids]])
    df["messages"] = df["messages"].map(_turns)
    df["rejected"] = df["rejected"].map(lambda v: _turns(v) or None)
    df["instruction"] = [first_user(m, t) for m, t in zip(df["messages"], df["text"], strict=True)]
    df["response"] = df["messages"].map(last_assistant)
    df["user_turns"] = df["messages"].map(lambda m: sum(1 for t in m if t["role"] == "user"))
    return df


def _turns(value: Any) -> list[dict[str, str]]:
    if value is None or not hasattr(value, "__iter__") or isinstance(value, str):
        return []
    return [{"role": str(t["role"]), "content": str(t["content"] or "")} for t in list(value)]


def first_user(messages: list[dict[str, str]], fallback: str = "") -> str:
    for turn in messages:
        if turn["role"] == "user" and turn["content"].strip():
            return turn["content"]
    return fallback


def last_assistant(messages: list[dict[str, str]]) -> str | None:
    for turn in reversed(messages):
        if turn["role"] == "assistant":
            return turn["content"]
    return None


def last_exchange(messages: list[dict[str, str]], prompt_chars: int = 600) -> str | None:
    """The last user turn (cut) and the assistant's answer to it: what a reward proxy scores."""
    response = last_assistant(messages)
    if response is None:
        return None
    idx = max(i for i, t in enumerate(messages) if t["role"] == "assistant")
    prompt = next((t["content"] for t in reversed(messages[:idx]) if t["role"] == "user"), "")
    return f"{prompt[-prompt_chars:]}\n\n{response}"


def row(sample_id: int, tag: str, *, value: Any = None, score: float | None = None, status: str = "ok",
        detail: str | None = None, method: str | None = None) -> dict[str, Any]:
    score = None if score is None or not np.isfinite(score) else float(score)
    return {"sample_id": int(sample_id), "tag": tag, "value": value, "score": score, "status": status,
            "detail": detail, "method": method}


class Tagger:
    """Makes some stored tags for a batch of samples. `prepare` runs once per job (load models,
    measure quality); `finish` once at the end (e.g. ensemble aggregation over the whole run)."""

    tags: list[str] = []
    method: str = ""
    source: str = ""  # the paper the method follows and how it deviates, shown beside the method

    def methods(self) -> dict[str, str]:
        line = f"{self.method} [{self.source}]" if self.source else self.method
        return {t: line for t in self.tags}

    def prepare(self, store: Store, ids: Sequence[int], progress: Any = None) -> dict[str, Any]:
        """Returns measured quality per tag: {tag: {...}}."""
        return {}

    def tag(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        raise NotImplementedError

    def finish(self, store: Store, run_id: int) -> None:
        return None


class NotComputed(Tagger):
    """Tags the chosen backend cannot make: recorded as not computed, with the reason, never guessed."""

    def __init__(self, tags: list[str], reason: str) -> None:
        self.tags, self.reason = list(tags), reason
        self.method = "none"

    def methods(self) -> dict[str, str]:
        return {t: f"not computed: {self.reason}" for t in self.tags}

    def tag(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        return [row(sid, t, status="not_computed", detail=self.reason, method="none")
                for sid in batch["sample_id"] for t in self.tags]
