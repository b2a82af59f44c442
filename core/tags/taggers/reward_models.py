"""Response quality from reward models, as Magpie (Xu et al., 2024) scores it with FsfairX-LLaMA3-RM: any
transformers sequence-classification model by name or path, run on the sample's conversation (for Magpie's
single-turn data: the instruction and the response), the chat template rendered once and tokenised without
adding special tokens again (a template that emits BOS must not get a second one from the tokenizer),
batched by length, on GPU in bf16 when present. A multi-turn conversation gets one score for the whole
conversation (a deviation: Magpie's data is single-turn). Longer conversations are cut at MAX_LENGTH tokens
(kept from the start), and the rows say so.

Ensembles (Coste et al., 2023, "Reward Model Ensembles Help Mitigate Overoptimization"). Each model is
first normalised once against a fixed calibration set recorded with the run (CALIBRATION, scored when the
models load): z = (reward - calibration mean) / calibration std. A sample's ensemble score therefore depends
on that sample alone, never on what else was tagged. Aggregations: worst-case optimisation (WCO) = min over
models; uncertainty-weighted optimisation (UWO) = mean - lambda * variance over models (population variance,
lambda configurable, default UWO_LAMBDA). Per-model raw rewards are kept as `reward:<i>` tags. Deviation:
the paper's ensembles are reward models of one architecture trained on the same data with different seeds;
unrelated reward models have differently scaled and differently biased rewards, which the calibration only
partly aligns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.store.database import Store
from core.tags.taggers.base import Tagger, row

AGGREGATIONS = ("min", "uwo")
# Lambda for UWO. Coste et al. report UWO as robust to lambda; 0.5 is the value used here by default
# (recalled from the paper's best-of-n experiments, not re-checked against its text): set it per run.
UWO_LAMBDA = 0.5
MAX_LENGTH = 2048
CALIBRATION_VERSION = "assay-rm-calibration-v1"
# A fixed, varied calibration set written for this project: good, mediocre and poor answers to everyday
# requests, so each model's reward scale is measured on the same conversations in every run.
CALIBRATION: list[tuple[str, str]] = [
    ("What is the capital of Canada?", "The capital of Canada is Ottawa, in the province of Ontario."),
    ("What is the capital of Canada?", "Toronto."),
    ("What is the capital of Canada?", "I don't know, look it up."),
    ("Give me a tip for sleeping better.", "Keep a regular schedule: go to bed and get up at the same time every "
                                            "day, even at weekends, and avoid screens for the last hour."),
    ("Give me a tip for sleeping better.", "Sleep more."),
    ("Write a haiku about snow.", "Soft flakes on the roof / the whole street holds its breath now / footprints "
                                  "fill by dawn"),
    ("Write a haiku about snow.", "Snow is cold and white and it falls down from the sky in winter."),
    ("Add 17 and 25.", "17 + 25 = 42."),
    ("Add 17 and 25.", "17 + 25 = 32."),
    ("Explain what a variable is in programming.", "A variable is a named place in memory that holds a value; "
     "the program can read it and change it later, e.g. `count = 3` then `count = count + 1`."),
    ("Explain what a variable is in programming.", "It is a thing."),
    ("How do I boil an egg?", "Place the egg in boiling water for 7 to 9 minutes for a firm yolk, then cool it "
                              "in cold water before peeling."),
    ("How do I boil an egg?", "Put it in the microwave for ten minutes."),
    ("Translate 'thank you' into Spanish.", "'Thank you' in Spanish is 'gracias'."),
    ("Translate 'thank you' into Spanish.", "Merci."),
    ("Summarise why the sky is blue in one sentence.", "Air molecules scatter blue sunlight much more than red "
                                                        "light, so scattered blue light reaches us from all over the sky."),
    ("Summarise why the sky is blue in one sentence.", "Because of the ocean reflecting on it."),
    ("Write a Python function that returns the larger of two numbers.",
     "def larger(a, b):\n    return a if a >= b else b"),
    ("Write a Python function that returns the larger of two numbers.", "def larger(a, b):\n    return a"),
    ("Can you help me write a polite email declining a meeting?", "Of course. 'Dear Sam, thank you for the "
     "invitation. Unfortunately I can't attend on Thursday; could we find another time next week? Best, Alex'"),
    ("Can you help me write a polite email declining a meeting?", "No."),
    ("What should I pack for a day hike?", "Water, snacks, a map, sun protection, a light rain jacket, a "
                                           "charged phone and a small first-aid kit."),
    ("What should I pack for a day hike?", "Nothing, hiking is easy."),
    ("Hello!", "Hello! How can I help you today?"),
]


def rm_conversation(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """What the reward model scores: (instruction, response) as Magpie does for a single-turn sample (any
    system turn left out); for a multi-turn one its user and assistant turns, scored as one conversation."""
    turns = [t for t in messages if t["role"] in ("user", "assistant")]
    users = [t for t in turns if t["role"] == "user"]
    answers = [t for t in turns if t["role"] == "assistant"]
    if len(users) == 1 and answers:
        return [users[0], answers[-1]]
    return turns


def calibration_conversations() -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in CALIBRATION]


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

    def render(self, conversation: list[dict[str, str]]) -> tuple[str, bool]:
        """(text, whether the tokenizer should add its special tokens). With a chat template the text
        already holds them (a Llama-3 template begins with <|begin_of_text|>), so adding them again would
        put a second BOS in front, which is not what the reward model was trained on."""
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(conversation, tokenize=False), False
        return "\n\n".join(f"{t['role']}: {t['content']}" for t in conversation), True

    def encode(self, conversations: Sequence[list[dict[str, str]]]) -> Any:
        """The model's input ids (padded batch) for some conversations, as `score` feeds them."""
        rendered = [self.render(c) for c in conversations]
        special = {s for _, s in rendered}
        if len(special) != 1:
            raise ValueError("conversations of one batch must render the same way")
        return self.tokenizer([t for t, _ in rendered], return_tensors="pt", padding=True, truncation=True,
                              max_length=self.max_length, add_special_tokens=special.pop())

    def score(self, conversations: Sequence[list[dict[str, str]]]) -> np.ndarray:
        """One reward per conversation: the single logit (num_labels 1), else last minus first logit."""
        import torch

        lengths = [len(self.render(c)[0]) for c in conversations]
        order = np.argsort(lengths, kind="stable")[::-1]  # longest first: OOM shows early
        out = np.zeros(len(conversations), dtype=np.float64)
        for start in range(0, len(conversations), self.batch_size):
            idx = order[start:start + self.batch_size]
            enc = self.encode([conversations[i] for i in idx]).to(self.device)
            with torch.no_grad():
                logits = self.model(**enc).logits.float()
            vals = logits[:, 0] if logits.shape[1] == 1 else logits[:, -1] - logits[:, 0]
            out[idx] = vals.cpu().numpy()
        return out

    def n_tokens(self, conversation: list[dict[str, str]]) -> int:
        text, special = self.render(conversation)
        return len(self.tokenizer(text, add_special_tokens=special)["input_ids"])


def aggregate(z: np.ndarray, how: str = "min", lam: float = UWO_LAMBDA) -> np.ndarray:
    """Coste et al.'s conservative aggregate of an (n samples x m models) matrix of calibrated rewards:
    WCO = min over models; UWO = mean - lam * (population) variance over models. Row by row: a sample's
    aggregate never depends on the other rows."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}")
    if z.shape[1] == 1:
        return z[:, 0]
    return z.min(axis=1) if how == "min" else z.mean(axis=1) - lam * z.var(axis=1)


def calibrate(model: RewardModel) -> dict[str, float]:
    """Mean and std of one model's rewards on the fixed calibration set."""
    vals = model.score(calibration_conversations())
    std = float(vals.std())
    return {"mean": float(vals.mean()), "std": std if std > 0 else 1.0}


class RewardModelTagger(Tagger):
    source = ("Magpie (Xu et al., 2024) response quality: a reward model's score of (instruction, response); "
              "ensembles after Coste et al. 2023")

    def __init__(self, models: Sequence[str], *, aggregation: str = "min", lam: float = UWO_LAMBDA,
                 device: str = "auto", batch_size: int | None = None) -> None:
        if not models:
            raise ValueError("name at least one reward model")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}")
        self.names, self.aggregation, self.lam = list(models), aggregation, lam
        self.device, self.batch_size = device, batch_size
        self.loaded: list[RewardModel] = []
        self.calibration: list[dict[str, float]] = []
        self.tags = ["response_quality"] + ([f"reward:{i}" for i in range(len(models))] if len(models) > 1 else [])
        how = ("worst case (min) over models" if aggregation == "min" else
               f"uncertainty-weighted: mean - {lam:g} x variance over models")
        self.method = (f"reward model {models[0]} on (instruction, response) (multi-turn: the whole conversation), "
                       "chat template rendered once" if len(models) == 1
                       else f"ensemble of {len(models)} reward models ({', '.join(models)}), each normalised on the "
                            f"fixed calibration set {CALIBRATION_VERSION} ({len(CALIBRATION)} conversations), "
                            f"aggregated by {how}; Coste et al. 2023 ensemble seeds of one model, these are "
                            "separate models")

    def prepare(self, store: Store | None, ids: Sequence[int], progress: Any = None) -> dict[str, Any]:
        self.loaded = [RewardModel(m, device=self.device, batch_size=self.batch_size) for m in self.names]
        self.calibration = [calibrate(m) for m in self.loaded] if len(self.loaded) > 1 else []
        out: dict[str, Any] = {"method": self.method, "accuracy": None,
                               "measured_on": "not measured here (see each model's own evaluation)",
                               "device": self.loaded[0].device, "dtype": self.loaded[0].dtype}
        if self.calibration:
            out |= {"aggregation": self.aggregation, "lambda": self.lam if self.aggregation == "uwo" else None,
                    "calibration_set": CALIBRATION_VERSION, "calibration_n": len(CALIBRATION),
                    "calibration": {n: c for n, c in zip(self.names, self.calibration, strict=True)}}
        return {"response_quality": out}

    def tag(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        has = [any(t["role"] == "assistant" for t in m) for m in batch["messages"]]
        convs = [rm_conversation(m) for m, h in zip(batch["messages"], has, strict=True) if h]
        ids = [s for s, h in zip(batch["sample_id"], has, strict=True) if h]
        rows = [row(s, t, status="not_computed", detail="no assistant response to score", method=self.method)
                for s, h in zip(batch["sample_id"], has, strict=True) if not h for t in self.tags]
        if not convs:
            return rows
        first = self.loaded[0]
        cut = [f"cut to the first {first.max_length} tokens" if first.n_tokens(c) > first.max_length else None
               for c in convs]
        scores = [m.score(convs) for m in self.loaded]
        if len(scores) == 1:
            return rows + [row(s, "response_quality", score=v, detail=d, method=self.method)
                           for s, v, d in zip(ids, scores[0], cut, strict=True)]
        for i, (name, vals) in enumerate(zip(self.names, scores, strict=True)):
            rows += [row(s, f"reward:{i}", score=v, detail=name, method=f"reward model {name} (raw reward)")
                     for s, v in zip(ids, vals, strict=True)]
        z = np.stack([(v - c["mean"]) / c["std"] for v, c in zip(scores, self.calibration, strict=True)], axis=1)
        agg = aggregate(z, self.aggregation, self.lam)
        return rows + [row(s, "response_quality", score=v, detail=d, method=self.method)
                       for s, v, d in zip(ids, agg, cut, strict=True)]
