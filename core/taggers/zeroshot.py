"""Task category by zero-shot embedding similarity (offline, no LLM).

Each Magpie category is described by its definition plus a handful of example requests written for this
project (not taken from any benchmark). A sample's first user turn is embedded with the same sentence
model as the map (all-MiniLM-L6-v2 by default) and scored against every prototype; a category's score is
its best prototype's cosine, and the primary category is the best-scoring one. The reported score is a
softmax over categories (temperature 0.05), a confidence rather than a probability.

Its accuracy is measured on real data whose category is known (`LABELLED_SETS`): MT-Bench's eight
categories mapped to Magpie's, and GSM8K (all Math). An MT-Bench 'extraction' item counts as correct when
tagged Data analysis or Information seeking, the two Magpie categories it straddles.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.store import Store
from core.taggers import vectors
from core.taggers.base import INSTRUCTION_CHARS, Tagger, row
from core.tags import TASK_CATEGORIES

DESCRIPTIONS = {
    "Information seeking": "Users ask for specific information or facts about various topics.",
    "Reasoning": "Queries require logical thinking, problem-solving, or processing of complex ideas.",
    "Planning": "Users need assistance in creating plans or strategies for activities and projects.",
    "Editing": "Involves editing, rephrasing, proofreading, or other tasks related to the composition of "
               "general written content.",
    "Coding & Debugging": "Users seek help with writing, reviewing, or fixing code in programming.",
    "Math": "Queries related to mathematical concepts, problems, and calculations.",
    "Role playing": "Users engage in scenarios requiring the assistant to adopt a character or persona.",
    "Data analysis": "Requests involve interpreting data, statistics, or performing analytical tasks.",
    "Creative writing": "Users seek assistance with crafting stories, poems, or other creative texts.",
    "Advice seeking": "Users ask for recommendations or guidance on various personal or professional issues.",
    "Brainstorming": "Involves generating ideas, creative thinking, or exploring possibilities.",
    "Others": "Any queries that do not fit into the above categories or are of a miscellaneous nature.",
}

EXAMPLES = {
    "Information seeking": [
        "What is the capital of Australia?", "Explain how photosynthesis works in plants.",
        "Who wrote the novel One Hundred Years of Solitude?", "What causes the seasons on Earth?",
        "Describe the main differences between mitosis and meiosis.",
        "How does the immune system respond to a virus?", "What were the main causes of the French Revolution?",
        "Explain what inflation is and how central banks control it.",
    ],
    "Reasoning": [
        "If all bloops are razzies and all razzies are lazzies, are all bloops lazzies?",
        "Three friends sit in a row; Anna is not next to Ben and Carl is on the left. Who sits in the middle?",
        "Which statement must be true if the first two are true? Explain your logic.",
        "A man looks at a portrait and says his father is that man's son. Who is in the portrait?",
        "Solve this logic puzzle: five houses, each a different colour, with these clues.",
        "Is the following argument valid? Identify the logical fallacy if there is one.",
        "David has three sisters and each of them has one brother. How many brothers does David have?",
    ],
    "Planning": [
        "Help me plan a two-week trip to Japan on a budget.", "Create a weekly study schedule for my exams.",
        "Draft a project plan with milestones for launching a mobile app.",
        "Plan a birthday party for twenty children at home.", "Make a 12-week training plan for a first marathon.",
        "Outline the steps to organise a small academic conference.",
    ],
    "Editing": [
        "Proofread this paragraph and fix grammar mistakes.", "Rewrite this email to sound more formal.",
        "Shorten this text to under 100 words while keeping the meaning.",
        "Paraphrase the following sentence in simpler words.", "Correct the spelling and punctuation in my essay.",
        "Make this cover letter more concise and professional.", "Rephrase this paragraph in the passive voice.",
    ],
    "Coding & Debugging": [
        "Write a Python function that reverses a linked list.", "Why does my JavaScript code throw undefined?",
        "Fix the bug in this SQL query that returns duplicate rows.", "Implement binary search in C++.",
        "How do I read a CSV file with pandas?", "Write a bash script that renames all files in a folder.",
        "Explain this error: TypeError: 'NoneType' object is not subscriptable.",
        "Implement a function to find the longest common subsequence of two strings.",
    ],
    "Math": [
        "Solve for x: 3x + 7 = 22.", "What is the derivative of sin(x) * x^2?",
        "A train travels 120 km in 1.5 hours. What is its average speed?",
        "Prove that the square root of 2 is irrational.", "Compute the integral of 1/x from 1 to e.",
        "Tom buys 3 apples at $2 each and 4 pears at $1.50 each. How much does he spend in total?",
        "What is the probability of rolling two sixes with two dice?",
        "Find the area of a triangle with vertices at (0,0), (4,0) and (0,3).",
    ],
    "Role playing": [
        "Pretend you are a pirate captain and greet your new crew.",
        "Act as a job interviewer and ask me questions for a marketing role.",
        "You are Sherlock Holmes. Describe what you deduce about me.",
        "Role-play as a medieval innkeeper talking to a traveller.",
        "Imagine you are a customer service agent handling an angry caller.",
        "Embody the persona of a famous scientist and answer as they would.",
    ],
    "Data analysis": [
        "Here is a table of monthly sales. Which product grew fastest?",
        "Analyse this dataset and summarise the main trends.",
        "Calculate the mean, median and standard deviation of these numbers.",
        "Extract all dates and amounts from the following invoice text and return them as JSON.",
        "Interpret the results of this regression analysis.", "Compare these survey results across age groups.",
        "Given these records, identify the company with the highest profit.",
    ],
    "Creative writing": [
        "Write a short story about a robot who learns to paint.", "Compose a poem about autumn leaves.",
        "Write song lyrics about leaving home.", "Draft the opening scene of a mystery novel.",
        "Write a haiku about the ocean.", "Write a persuasive blog post about visiting Iceland.",
        "Write a limerick about a cat who loves cheese.",
    ],
    "Advice seeking": [
        "How can I deal with stress at work?", "What should I consider before buying my first house?",
        "My friend is ignoring me. What should I do?", "Any tips for improving my sleep?",
        "Should I accept a job offer with higher pay but longer hours?",
        "How do I prepare for a difficult conversation with my manager?",
    ],
    "Brainstorming": [
        "Give me ten ideas for a science fair project.", "Suggest names for my new coffee shop.",
        "What are some creative ways to reuse old jars?", "Brainstorm themes for a company retreat.",
        "List possible features for a note-taking app.", "Come up with marketing ideas for a local bakery.",
    ],
    "Others": [
        "Hello!", "Thanks.", "asdf", "Tell me a joke.", "ok", "Translate 'good morning' into French.",
    ],
}

# Real sets whose category is known, and how their labels map to Magpie's (several = any counts).
MT_BENCH_MAP: dict[str, list[str]] = {
    "writing": ["Creative writing"], "roleplay": ["Role playing"], "reasoning": ["Reasoning"], "math": ["Math"],
    "coding": ["Coding & Debugging"], "extraction": ["Data analysis", "Information seeking"],
    "stem": ["Information seeking"], "humanities": ["Information seeking"],
}
TEMPERATURE = 0.05
_PROTOTYPES: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def prototypes(model: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(prototype vectors, category index of each), embedded once per model per process."""
    name = vectors.model_name(model)
    if name not in _PROTOTYPES:
        texts, owner = [], []
        for k, cat in enumerate(TASK_CATEGORIES):
            for text in [f"{cat}: {DESCRIPTIONS[cat]}", *EXAMPLES[cat]]:
                texts.append(text)
                owner.append(k)
        _PROTOTYPES[name] = (vectors.encode(texts, model), np.asarray(owner))
    return _PROTOTYPES[name]


def category_scores(vecs: np.ndarray, model: str | None = None) -> np.ndarray:
    """n x 12 matrix: per sample, each category's best prototype cosine."""
    protos, owner = prototypes(model)
    sims = vecs @ protos.T
    out = np.full((len(vecs), len(TASK_CATEGORIES)), -1.0, dtype=np.float32)
    for k in range(len(TASK_CATEGORIES)):
        out[:, k] = sims[:, owner == k].max(axis=1)
    return out


def classify(texts: Sequence[str], model: str | None = None, store: Store | None = None) -> pd.DataFrame:
    """Primary category and its softmax confidence per text."""
    vecs = vectors.encode([t[:INSTRUCTION_CHARS] for t in texts], model, store)
    scores = category_scores(vecs, model)
    z = np.exp((scores - scores.max(axis=1, keepdims=True)) / TEMPERATURE)
    prob = z / z.sum(axis=1, keepdims=True)
    best = scores.argmax(axis=1)
    return pd.DataFrame({"category": [TASK_CATEGORIES[i] for i in best], "confidence": prob[np.arange(len(best)), best]})


def labelled_set(store: Store, per_set: int = 100) -> pd.DataFrame:
    """Real samples with a known Magpie category: (sample_id, dataset, instruction, truth as a list)."""
    mt = store.query_df(
        "SELECT s.id AS sample_id, d.name AS dataset, s.messages[1].content AS instruction, "
        "json_extract_string(s.meta, '$.category') AS src FROM samples s JOIN datasets d USING (dataset_id) "
        "WHERE json_extract_string(s.meta, '$.category') IN (SELECT unnest(?::VARCHAR[])) "
        "AND d.source ILIKE '%mt_bench%' ORDER BY s.id", [list(MT_BENCH_MAP)])
    mt["truth"] = mt["src"].map(MT_BENCH_MAP)
    gsm = store.query_df(
        "SELECT s.id AS sample_id, d.name AS dataset, s.messages[1].content AS instruction FROM samples s "
        "JOIN datasets d USING (dataset_id) WHERE d.source ILIKE '%gsm8k%' ORDER BY s.id LIMIT ?", [per_set])
    gsm["truth"] = [["Math"]] * len(gsm)
    gsm["src"] = "gsm8k"
    return pd.concat([mt, gsm], ignore_index=True)


def evaluate(store: Store, model: str | None = None, per_set: int = 100) -> dict[str, Any]:
    """Accuracy of the zero-shot tagger on the labelled real data in this store (None where absent)."""
    data = labelled_set(store, per_set)
    if data.empty:
        return {"accuracy": None, "measured_on": "not measured: no MT-Bench or GSM8K data in this store"}
    pred = classify(list(data["instruction"]), model, store)["category"]
    hit = np.array([p in t for p, t in zip(pred, data["truth"], strict=True)])
    by_src = {src: float(hit[(data["src"] == src).to_numpy()].mean()) for src in sorted(data["src"].unique())}
    return {"accuracy": float(hit.mean()), "n": int(len(data)), "chance": 1 / len(TASK_CATEGORIES),
            "by_source": by_src, "measured_on": f"MT-Bench categories mapped to Magpie ({json.dumps(MT_BENCH_MAP)}) "
            f"and up to {per_set} GSM8K questions (Math)"}


class ZeroShotCategoryTagger(Tagger):
    tags = ["category"]

    def __init__(self, model: str | None = None) -> None:
        self.model = model
        self.method = (f"zero-shot embedding similarity ({vectors.model_name(model)}) to Magpie category "
                       "descriptions and examples")
        self.store: Store | None = None

    def prepare(self, store: Store, ids: Sequence[int], progress: Any = None) -> dict[str, Any]:
        self.store = store
        return {"category": {"method": self.method, **evaluate(store, self.model)}}

    def tag(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        pred = classify(list(batch["instruction"]), self.model, self.store)
        return [row(sid, "category", value=c, score=p, method=self.method)
                for sid, c, p in zip(batch["sample_id"], pred["category"], pred["confidence"], strict=True)]
