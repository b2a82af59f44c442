"""Field accounting: where each top-level field of a load's source records went (issue 12).

Into turns (or the sample's tools / KTO label columns), into metadata, or nowhere but the raw record. The
record path counts per record from each sample's `used` fields and metadata; the columnar path, where
every row has every field, counts whole columns. A field left unused that holds conversation turns is a
warning (an error under strict): that is how a wrong shape silently drops turns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from core.ingest.shapes import Normalised

# what shapes._turn and the Firefly reader read from one turn
_READ_TURN_KEYS = frozenset(("role", "from", "content", "value", "tool_calls", "function_call", "tool_call_id", "name",
                             "reasoning", "reasoning_content", "thinking", "human", "assistant", "text"))
_TURN_KEYS = frozenset(("role", "from", "content", "value", "human", "assistant", "gpt", "user", "text"))


def _looks_like_turns(value: Any) -> bool:
    """A list of messages ({role, content}, {from, value}, {human, assistant}) or of [user, assistant] pairs."""
    if type(value) is not list or not value:
        return False
    first = value[0]
    if type(first) is dict:
        return bool(_TURN_KEYS & first.keys())
    return type(first) in (list, tuple) and len(first) == 2 and all(type(x) is str for x in first)


class FieldAccounting:
    """Where each top-level field of the source records went: into turns (or the tools / KTO label
    columns), into metadata, or nowhere but the raw record; counted per record."""

    def __init__(self) -> None:
        self.n_records = 0
        self.dest: dict[str, list[int]] = {}  # field -> [records, into turns, into metadata, raw only]
        self.turn_like: Counter[str] = Counter()  # unused fields that hold conversation turns

    def add(self, record: dict[str, Any], samples: list[Normalised]) -> None:
        self.n_records += 1
        if len(samples) == 1:
            used, meta = samples[0].used, samples[0].meta
        else:
            used = frozenset().union(*(s.used for s in samples))
            meta = {k: None for s in samples for k in s.meta}
        for key, value in record.items():
            counts = self.dest.get(key)
            if counts is None:
                counts = self.dest[key] = [0, 0, 0, 0]
            counts[0] += 1
            if key in used:
                counts[1] += 1
                if key != "replies" and _looks_like_turns(value):  # (OASST replies are a tree, not turns)
                    self._turn_keys(key, value)
            elif key in meta:
                counts[2] += 1
            else:
                counts[3] += 1
                if _looks_like_turns(value):
                    self.turn_like[key] += 1

    def _turn_keys(self, key: str, turns: list[Any]) -> None:
        """Keys inside the turns of a used field that the turn reader does not read (LLaMA-Factory's
        loss_weight, OpenAI's weight, ...): accounted as `field[].key`, kept in the raw record only."""
        extra = {k for t in turns if type(t) is dict for k in t} - _READ_TURN_KEYS
        for sub in extra:
            counts = self.dest.setdefault(f"{key}[].{sub}", [0, 0, 0, 0])
            counts[0] += 1
            counts[3] += 1

    def add_columns(self, n_rows: int, fields: Iterable[str], meta: Iterable[str]) -> None:
        """The columnar path: every row has every field (in this order, as the record path lists them);
        those in `meta` went to metadata, the others into turns."""
        self.n_records += n_rows
        meta = set(meta)
        for key in fields:
            self.dest[key] = [n_rows, 0, n_rows, 0] if key in meta else [n_rows, n_rows, 0, 0]

    def as_list(self) -> list[dict[str, Any]]:
        return [{"field": k, "records": c[0], "turns": c[1], "metadata": c[2], "raw_only": c[3]}
                for k, c in self.dest.items()]

    def not_used(self) -> list[str]:
        return [f"{k}, in {c[3]} of {self.n_records} records" for k, c in self.dest.items() if c[3]]

    def warnings(self) -> list[str]:
        return [f"field {k!r} holds conversation turns in {n} of {self.n_records} records but was not used "
                "(pick another --shape or --map it)" for k, n in self.turn_like.items()]
