"""Tags that need no model: language (lingua, ships its own n-gram models), turn structure, lengths."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pandas as pd

from core.tags.taggers.base import Tagger, row

LANGUAGE_CHARS = 2000          # lingua is accurate well before this; longer texts only cost time
_DETECTORS: dict[str, Any] = {}
_LOCK = threading.Lock()
# meta fields that carry a language label, used to measure lingua where the data has them (oasst)
LANGUAGE_FIELDS = ("oasst_lang", "lang", "language")


def detector(mode: str = "high") -> Any:
    """One lingua detector per accuracy mode per process, built lazily: loading the high-accuracy
    models for all languages costs seconds (6 s on an idle 2-core machine) and about 1 GB of memory;
    low-accuracy mode loads in about a second but is less reliable on short texts."""
    if mode not in ("high", "low"):
        raise ValueError("language mode must be 'high' or 'low'")
    with _LOCK:
        if mode not in _DETECTORS:
            from lingua import LanguageDetectorBuilder

            builder = LanguageDetectorBuilder.from_all_languages()
            if mode == "low":
                builder = builder.with_low_accuracy_mode()
            _DETECTORS[mode] = builder.build()
    return _DETECTORS[mode]


def detect_languages(texts: Sequence[str], mode: str = "high") -> list[tuple[str | None, float | None]]:
    """(ISO 639-1 code or None when lingua cannot decide, confidence of that language) per text."""
    det = detector(mode)
    cut = [t[:LANGUAGE_CHARS] for t in texts]
    langs = det.detect_languages_in_parallel_of(cut)
    out: list[tuple[str | None, float | None]] = []
    for text, lang in zip(cut, langs, strict=True):
        if lang is None:
            out.append((None, None))
        else:
            out.append((lang.iso_code_639_1.name.lower(), float(det.compute_language_confidence(text, lang))))
    return out


class LanguageTagger(Tagger):
    tags = ["language"]

    def __init__(self, mode: str = "high") -> None:
        self.mode = mode
        self.method = f"lingua-language-detector ({mode}-accuracy mode, all languages) on the first user turn"
        self.hits: list[bool] = []

    def tag(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        rows = []
        for sid, (code, conf), meta in zip(batch["sample_id"], detect_languages(list(batch["instruction"]), self.mode),
                                           batch["meta"], strict=True):
            if code is None:
                rows.append(row(sid, "language", status="not_computed", method=self.method,
                                detail="lingua could not decide (too short or mixed text)"))
                continue
            rows.append(row(sid, "language", value=code, score=conf, method=self.method))
            truth = _language_label(meta)
            if truth:
                self.hits.append(truth == code)
        return rows

    def measured(self) -> dict[str, Any]:
        """Accuracy against language labels that came with the data (oasst's `lang`), where any."""
        if not self.hits:
            return {"method": self.method, "accuracy": None,
                    "measured_on": "not measured in this run: no language-labelled samples (see bench/tagging.py)"}
        return {"method": self.method, "accuracy": sum(self.hits) / len(self.hits), "n": len(self.hits),
                "measured_on": "samples of this run that carry a language label in their metadata"}


def _language_label(meta: Any) -> str | None:
    import json

    if not meta:
        return None
    data = json.loads(meta) if isinstance(meta, str) else meta
    if not isinstance(data, dict):
        return None
    for key in LANGUAGE_FIELDS:
        value = data.get(key)
        if isinstance(value, str) and 2 <= len(value) <= 5:
            return value.split("-")[0].lower()
    return None


class StructureTagger(Tagger):
    """Turn structure and lengths: counted, exact."""

    def __init__(self, tags: list[str]) -> None:
        self.tags = [t for t in tags if t in ("turns", "n_chars", "n_tokens")]
        self.method = "counted from the sample (exact)"

    def tag(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        rows = []
        for r in batch.itertuples():
            if "turns" in self.tags:
                rows.append(row(r.sample_id, "turns", value="multi" if r.user_turns > 1 else "single",
                                score=r.user_turns, detail=f"{len(r.messages)} messages", method=self.method))
            if "n_chars" in self.tags:
                rows.append(row(r.sample_id, "n_chars", score=r.n_chars, method=self.method))
            if "n_tokens" in self.tags:
                rows.append(row(r.sample_id, "n_tokens", score=r.n_tokens, method="token count made at ingest"))
        return rows

