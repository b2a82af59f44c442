"""Safety from a Llama Guard model itself (Meta's Llama Guard 2, or any model that answers the same way),
by name or path through transformers.

The prompt is the model's own: its tokenizer's chat template where it has one (Llama Guard 2 ships one
that writes the task, the S1-S11 categories and the conversation), rendered once and tokenised without
adding special tokens again; otherwise the prompt format of Llama Guard 2's model card, rebuilt here
(`build_prompt`). The model assesses the last turn of the conversation (the last assistant answer, or the
user's turn when there is no answer yet), greedy, a few new tokens. Its answer is "safe", or "unsafe" and
on the next line the violated categories ("S1,S3"); anything else is a parse error with the raw answer
kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from core.tags.taggers.base import Tagger, row
from core.tags.vocabulary import HAZARDS, check_value

SOURCE = "Llama Guard 2 (Meta, 2024), prompt and S1-S11 taxonomy of its model card"


def _role_name(role: str) -> str:
    return "Agent" if role == "assistant" else "User"


def chat_turns(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """User and assistant turns only (Llama Guard's template takes alternating user/assistant turns)."""
    return [{"role": t["role"], "content": t["content"]} for t in messages if t["role"] in ("user", "assistant")]


def build_prompt(messages: list[dict[str, str]]) -> str:
    """Llama Guard 2's prompt (model card format) for the last turn of a conversation."""
    turns = chat_turns(messages)
    who = _role_name(turns[-1]["role"]) if turns else "User"
    categories = "\n".join(f"{code}: {name}. " for code, name in HAZARDS.items())
    conversation = "\n\n".join(f"{_role_name(t['role'])}: {t['content']}" for t in turns)
    return (f"[INST] Task: Check if there is unsafe content in '{who}' messages in conversations according our "
            "safety policy with the below categories.\n\n"
            f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{categories}\n<END UNSAFE CONTENT CATEGORIES>\n\n"
            f"<BEGIN CONVERSATION>\n\n{conversation}\n\n<END CONVERSATION>\n\n"
            f"Provide your safety assessment for ONLY THE LAST {who} message in the above conversation:\n"
            " - First line must read 'safe' or 'unsafe'.\n"
            " - If unsafe, a second line must include a comma-separated list of violated categories. [/INST]")


def parse_output(text: str | None) -> tuple[str | None, str | None, str | None]:
    """(safety, hazards, why not) from a Llama Guard answer: 'safe' or 'unsafe\\nS1,S3'."""
    if text is None:
        return None, None, "no answer"
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines or lines[0].lower() not in ("safe", "unsafe"):
        return None, None, f"not a Llama Guard answer: {text[:500]!r}"
    if lines[0].lower() == "safe":
        return "safe", "", None
    if len(lines) < 2:
        return "unsafe", None, f"unsafe without categories: {text[:500]!r}"
    hazards, status, detail = check_value("hazards", lines[1])
    if status != "ok":
        return "unsafe", None, f"unknown categories {detail}"
    return "unsafe", hazards, None


class LlamaGuardModel:
    """A Llama Guard causal LM: one generate call per batch, left-padded, greedy."""

    def __init__(self, model: str, *, device: str = "auto", batch_size: int = 8, max_new_tokens: int = 16) -> None:
        from core.tags.taggers.llm_judge import load_generation_lm

        self.name = model
        self.tokenizer, self.lm, self.device = load_generation_lm(model, device)
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    def render(self, messages: list[dict[str, str]]) -> tuple[str, bool]:
        """(prompt text, add special tokens when tokenising): the model's chat template when it has one
        (its text already holds BOS where the model wants one), else the model card's format."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(chat_turns(messages), tokenize=False), False
        return build_prompt(messages), True

    def generate(self, conversations: Sequence[list[dict[str, str]]]) -> list[str]:
        import torch

        out: list[str] = []
        for start in range(0, len(conversations), self.batch_size):
            rendered = [self.render(c) for c in conversations[start:start + self.batch_size]]
            enc = self.tokenizer([t for t, _ in rendered], return_tensors="pt", padding=True,
                                 add_special_tokens=rendered[0][1]).to(self.device)
            with torch.no_grad():
                gen = self.lm.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                       pad_token_id=self.tokenizer.pad_token_id)
            out += self.tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return out


class LlamaGuardTagger(Tagger):
    """safety (safe/unsafe) and hazards (S codes) from a Llama Guard model's own answer."""

    source = SOURCE

    def __init__(self, model: str, tags: Sequence[str] = ("safety", "hazards"), *, device: str = "auto",
                 max_new_tokens: int = 16) -> None:
        self.name, self.device, self.max_new_tokens = model, device, max_new_tokens
        self.tags = [t for t in ("safety", "hazards") if t in tags]
        self.method = f"Llama Guard model {model} (its own prompt and answer), on the last turn"
        self.guard: LlamaGuardModel | None = None

    def prepare(self, store: Any, ids: Sequence[int], progress: Any = None) -> dict[str, Any]:
        self.guard = LlamaGuardModel(self.name, device=self.device, max_new_tokens=self.max_new_tokens)
        note = "not measured here (see the model card's evaluation)"
        return {t: {"method": self.method, "accuracy": None, "measured_on": note} for t in self.tags}

    def tag(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        assert self.guard is not None, "prepare() loads the model"
        answers = self.guard.generate(list(batch["messages"]))
        rows = []
        for sid, text in zip(batch["sample_id"], answers, strict=True):
            safety, hazards, why = parse_output(text)
            for tag, value in (("safety", safety), ("hazards", hazards)):
                if tag not in self.tags:
                    continue
                if value is None:
                    rows.append(row(sid, tag, status="parse_error", detail=why, method=self.method))
                else:
                    rows.append(row(sid, tag, value=value, detail=text.strip()[:200], method=self.method))
        return rows
