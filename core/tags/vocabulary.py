"""The Magpie-style tag vocabulary: categories, ordinal scales, safety hazards, tag groups and which
backend makes which; and the check a tagger's answer must pass. Imports nothing else from core, so
labels (schemas built from these words) and tags (results compared with labels) can both use it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

TASK_CATEGORIES = [
    "Information seeking", "Reasoning", "Planning", "Editing", "Coding & Debugging", "Math", "Role playing",
    "Data analysis", "Creative writing", "Advice seeking", "Brainstorming", "Others",
]
# Each category's definition, written for this project after Magpie's taxonomy (Xu et al., 2024, the
# task-classification prompt): the LLM judge's category prompt lists them, the zero-shot tagger embeds them.
CATEGORY_DEFINITIONS: dict[str, str] = {
    "Information seeking": "The user wants facts, explanations or background knowledge on a subject: what "
                           "something is, how it works, why it happened, or an overview of a field.",
    "Reasoning": "The user poses a puzzle, riddle or logic problem whose answer has to be worked out step by step "
                 "from the premises given (deduction, relations, sequences, validity of an argument).",
    "Planning": "The user wants a plan, schedule, itinerary, agenda or strategy organising steps or "
                "activities toward a goal.",
    "Editing": "The user supplies text of their own and wants it changed: corrected, proofread, rephrased, "
               "shortened, restyled or reformatted.",
    "Coding & Debugging": "The user wants program code written, explained, reviewed, optimised or fixed, or asks "
                          "about programming tools, languages and algorithms.",
    "Math": "The user wants a calculation done or a mathematical problem solved: arithmetic, word problems, "
            "algebra, geometry, probability, calculus or a proof.",
    "Role playing": "The user asks the assistant to take on a character, persona or profession and to speak or "
                    "act as that figure in a scenario.",
    "Data analysis": "The user provides data or text and wants information pulled out, counted, classified, "
                     "compared, summarised into structured output, or statistically interpreted.",
    "Creative writing": "The user wants original composed text: stories, poems, lyrics, scripts, speeches, "
                        "letters, emails, blog posts or other pieces written from scratch.",
    "Advice seeking": "The user describes a personal, professional or practical situation and wants "
                      "recommendations or guidance on what to do.",
    "Brainstorming": "The user wants many options generated: ideas, names, themes, suggestions or "
                     "possibilities to choose from.",
    "Others": "Anything that fits none of the categories above: greetings, chit-chat, jokes, tests, "
              "or text with no clear request.",
}
DIFFICULTY = ["very easy", "easy", "medium", "hard", "very hard"]
INPUT_QUALITY = ["very poor", "poor", "average", "good", "excellent"]
SAFETY = ["safe", "unsafe"]
# Llama Guard 2's harm categories, named exactly as on its model card (meta-llama/Meta-Llama-Guard-2-8B).
HAZARDS = {
    "S1": "Violent Crimes", "S2": "Non-Violent Crimes", "S3": "Sex Crimes", "S4": "Child Sexual Exploitation",
    "S5": "Specialized Advice", "S6": "Privacy", "S7": "Intellectual Property", "S8": "Indiscriminate Weapons",
    "S9": "Hate", "S10": "Suicide & Self-Harm", "S11": "Sexual Content",
}
TURNS = ["single", "multi"]

# Closed vocabularies per stored tag; tags absent here are free text (intent, knowledge) or scores.
VOCABULARY: dict[str, list[str]] = {
    "category": TASK_CATEGORIES,
    "difficulty": DIFFICULTY,
    "input_quality": INPUT_QUALITY,
    "safety": SAFETY,
    "turns": TURNS,
}
ORDERED = {"difficulty": DIFFICULTY, "input_quality": INPUT_QUALITY}

# What a user asks for (CLI --tags, the page) -> the stored tags it produces.
TAG_GROUPS: dict[str, list[str]] = {
    "category": ["category", "other_categories"],
    "intent": ["intent"],
    "knowledge": ["knowledge"],
    "difficulty": ["intent", "knowledge", "difficulty"],  # Magpie asks for these three together
    "input_quality": ["input_quality"],                   # explanation in `detail`
    "response_quality": ["response_quality"],             # a reward model's score in `score` (Magpie)
    "preference_proxy": ["preference_proxy"],             # offline Bradley-Terry proxy's score in `score`
    "safety": ["safety", "hazards"],                      # hazards: comma-joined S codes
    "language": ["language"],                              # ISO 639-1
    "turns": ["turns"],                                    # single/multi; score = user turns
    "lengths": ["n_chars", "n_tokens"],                    # score = the count
}
DEFAULT_GROUPS = ["category", "difficulty", "input_quality", "response_quality", "safety", "language", "turns",
                  "lengths"]
STATUSES = ("ok", "parse_error", "out_of_vocabulary", "not_computed", "request_error")
SCORE_TAGS = {"response_quality", "preference_proxy", "n_chars", "n_tokens"}

# Which groups each backend makes by itself; `how_to_get` says how to get the others. response_quality
# needs a reward model (any backend), preference_proxy a trained proxy, safety can also come from a
# Llama Guard model named by the user.
BACKEND_GROUPS: dict[str, list[str]] = {
    "offline": ["category", "language", "turns", "lengths"],
    "openai": ["category", "difficulty", "input_quality", "safety", "language", "turns", "lengths"],
    "transformers": ["category", "difficulty", "input_quality", "safety", "language", "turns", "lengths"],
}
HOW_TO_GET: dict[str, str] = {
    "difficulty": "an LLM judge: backend openai (a served model) or transformers (a local model)",
    "input_quality": "an LLM judge: backend openai (a served model) or transformers (a local model)",
    "intent": "an LLM judge (it comes with difficulty)",
    "knowledge": "an LLM judge (it comes with difficulty)",
    "safety": "a Llama Guard model (safety model, any backend) or an LLM judge (openai/transformers)",
    "response_quality": "a reward model (e.g. sfairXC/FsfairX-LLaMA3-RM-v0.1, as Magpie uses; any backend)",
    "preference_proxy": "a Bradley-Terry proxy trained on a preference dataset (assay tag-train-proxy, or the "
                        "Tags page's offline models)",
}


def available_groups(backend: str, *, reward_models: bool = False, guard_model: bool = False,
                     proxy: bool = False) -> list[str]:
    """The groups `backend` computes with what the user has given (reward models, a Llama Guard model, a
    trained proxy): what the page and the CLI offer by default."""
    if backend not in BACKEND_GROUPS:
        raise ValueError(f"backend must be one of {', '.join(BACKEND_GROUPS)}")
    out = list(BACKEND_GROUPS[backend])
    if guard_model and "safety" not in out:
        out.append("safety")
    if reward_models:
        out.append("response_quality")
    if proxy and backend == "offline":
        out.append("preference_proxy")
    return [g for g in TAG_GROUPS if g in out]


def backend_summary(backend: str) -> tuple[list[str], dict[str, str]]:
    """(groups the backend makes by itself, {other group: how to get it}) for the text shown before a run."""
    made = BACKEND_GROUPS[backend]
    others = {g: HOW_TO_GET.get(g, "another backend") for g in TAG_GROUPS if g not in made
              and g in HOW_TO_GET and g not in ("intent", "knowledge")}
    return list(made), others
COLUMNS = ["sample_id", "tag", "value", "score", "status", "detail", "method"]


def expand_groups(groups: str | Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    """'category,safety' -> the stored tag names, in a stable order, validated. `extra`: further tag
    names allowed (those of trained classifiers)."""
    names = [g.strip() for g in (groups.split(",") if isinstance(groups, str) else groups) if g.strip()]
    unknown = [g for g in names if g not in TAG_GROUPS and g not in _ALL_TAGS and g not in set(extra)]
    if unknown:
        raise ValueError(f"unknown tag(s) {', '.join(unknown)}; choose among {', '.join(TAG_GROUPS)}")
    out: list[str] = []
    for g in names:
        for t in TAG_GROUPS.get(g, [g]):
            if t not in out:
                out.append(t)
    return out


_ALL_TAGS = {t for ts in TAG_GROUPS.values() for t in ts}


# ---- checking values ------------------------------------------------------------------------------


def check_value(tag: str, value: Any) -> tuple[str | None, str, str | None]:
    """(value, status, detail) for a raw value of `tag`: vocabulary tags must match exactly (case and
    surrounding spaces forgiven); anything else is out_of_vocabulary, with the raw answer in detail."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, "parse_error", f"empty or missing {tag}"
    vocab = VOCABULARY.get(tag)
    if tag == "hazards":
        return _check_hazards(value)
    if tag == "other_categories":
        return _check_others(value)
    if vocab is None:
        if not isinstance(value, str | int | float):
            return None, "parse_error", f"{tag} should be text: {json.dumps(value, default=str)[:500]}"
        return str(value).strip(), "ok", None
    if not isinstance(value, str):
        return None, "out_of_vocabulary", json.dumps(value, default=str)[:500]
    by_lower = {v.lower(): v for v in vocab}
    hit = by_lower.get(value.strip().lower())
    if hit is None:
        return None, "out_of_vocabulary", value[:500]
    return hit, "ok", None


def _check_hazards(value: Any) -> tuple[str | None, str, str | None]:
    items = value if isinstance(value, list) else [v for v in str(value).replace(";", ",").split(",")]
    codes = []
    for item in items:
        code = str(item).strip().upper().split(":")[0].split(" ")[0]
        if not code:
            continue
        if code not in HAZARDS:
            return None, "out_of_vocabulary", json.dumps(value, default=str)[:500]
        codes.append(code)
    return ",".join(sorted(set(codes), key=lambda c: int(c[1:]))), "ok", None


def _check_others(value: Any) -> tuple[str | None, str, str | None]:
    items = value if isinstance(value, list) else [value]
    by_lower = {v.lower(): v for v in TASK_CATEGORIES}
    out = []
    for item in items:
        hit = by_lower.get(str(item).strip().lower()) if isinstance(item, str) else None
        if hit is None:
            return None, "out_of_vocabulary", json.dumps(value, default=str)[:500]
        out.append(hit)
    return json.dumps(out), "ok", None


# ---- writing --------------------------------------------------------------------------------------
