"""Tags name what made them: the preference proxy is not response quality, a backend offers only what it
computes and says why the rest is missing, ensembles follow Coste et al. 2023, Llama Guard answers parse."""

from __future__ import annotations

import numpy as np
import pytest

import core.dedup.groups as dedup
import core.tags.results as T
import core.tags.vocabulary as vocab
from core.ingest.importer import ingest_records
from core.store.database import Store
from core.tags.taggers.job import JobConfig, run_tagging
from core.tags.taggers.llama_guard import build_prompt, parse_output
from core.tags.taggers.reward_models import UWO_LAMBDA, aggregate

PAIRS = [
    {"prompt": f"How do I {task}?", "chosen": f"Here is a careful, safe way to {task}: step one, step two.",
     "rejected": f"Just {task} however, who cares, it might hurt someone."}
    for task in ("bake bread", "fix a bike", "learn French", "plant a tree", "paint a wall", "write a CV",
                 "sleep better", "save money", "clean an oven", "tune a guitar", "walk a dog", "cook rice")
]


@pytest.fixture
def prefs(store: Store) -> Store:
    ingest_records(store, PAIRS, name="prefs", shape="preference", license="MIT")
    return store


def test_uwo_is_mean_minus_lambda_variance_and_wco_is_min() -> None:
    # Coste et al. 2023, section 3: WCO = min_i R_i; UWO = mean_i R_i - lambda * Var_i R_i (variance over the
    # ensemble). By hand: rewards (1, 3): mean 2, variance ((1-2)^2 + (3-2)^2) / 2 = 1; lambda 0.5 -> 1.5.
    z = np.array([[1.0, 3.0], [0.0, 0.0], [-2.0, 4.0]])
    assert aggregate(z, "uwo", 0.5).tolist() == [1.5, 0.0, 1.0 - 0.5 * 9.0]
    assert aggregate(z, "min").tolist() == [1.0, 0.0, -2.0]
    assert UWO_LAMBDA == 0.5
    # a row's aggregate never depends on the other rows
    assert aggregate(z[:1], "uwo", 0.5)[0] == aggregate(z, "uwo", 0.5)[0]
    with pytest.raises(ValueError):
        aggregate(z, "mean_minus_std")


def test_the_proxy_is_its_own_tag_and_never_response_quality(prefs: Store) -> None:
    from core.tags.taggers import reward_proxy

    model = reward_proxy.train_reward_proxy(prefs, "prefs", test_frac=0.25)
    assert model.tag == "preference_proxy" and model.metrics["trained_on"] == "prefs"
    report = run_tagging(prefs, dataset="prefs", tags="response_quality,preference_proxy")
    cur = T.current_tags(prefs, "prefs")
    assert (cur["preference_proxy__status"] == "ok").all() and cur["preference_proxy"].std() > 0
    assert (cur["response_quality__status"] == "not_computed").all() and cur["response_quality"].isna().all()
    assert "trained on the preference pairs of prefs" in report.metrics["preference_proxy"]["method"]
    assert report.computed == ["preference_proxy"]
    assert "reward model" in report.not_computed["response_quality"]
    params = T.tag_runs(prefs, "prefs").iloc[0]["params"]
    assert "prefs" in params["methods"]["preference_proxy"]  # the run record says how it was made
    # dedup's keep=quality reads response_quality only: with just a proxy it falls back to the first sample
    assert dedup.quality_scores(prefs, list(cur.index)) is None


def test_default_tags_are_what_the_backend_computes(prefs: Store) -> None:
    assert vocab.available_groups("offline") == ["category", "language", "turns", "lengths"]
    assert "difficulty" in vocab.available_groups("openai")
    assert {"response_quality", "preference_proxy"} <= set(vocab.available_groups("offline", reward_models=True,
                                                                               proxy=True))
    assert "safety" in vocab.available_groups("offline", guard_model=True)
    made, others = vocab.backend_summary("offline")
    assert "difficulty" in others and "LLM judge" in others["difficulty"] and "reward model" in others["response_quality"]
    assert JobConfig().default_tags(prefs) == ["category", "language", "turns", "lengths"]
    report = run_tagging(prefs, dataset="prefs", tags=None, language_mode="low", limit=3)
    assert report.tags == ["category", "language", "turns", "n_chars", "n_tokens"]
    assert report.not_computed == {} and set(report.computed) == set(report.tags)
    assert report.summary().startswith(f"Run {report.run_id}: computed category, language, turns, n_chars, n_tokens "
                                       "for 3/3 samples")


def test_the_message_counts_only_computed_tags(prefs: Store) -> None:
    report = run_tagging(prefs, dataset="prefs", tags="turns,safety,difficulty", limit=4)
    assert report.computed == ["turns"]
    assert set(report.not_computed) == {"safety", "hazards", "intent", "knowledge", "difficulty"}
    text = report.summary()
    assert "computed turns for 4/4 samples" in text
    assert "safety (the offline backend has no model for this tag; to get safety: a Llama Guard model" in text


def test_llama_guard_prompt_and_answers() -> None:
    # The prompt format of Llama Guard 2's model card: the task names whose last message is assessed, the
    # S1-S11 categories by their model-card names, the conversation with User/Agent roles.
    convo = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"},
             {"role": "assistant", "content": "hello"}]
    prompt = build_prompt(convo)
    assert prompt.startswith("[INST] Task: Check if there is unsafe content in 'Agent' messages")
    assert "S4: Child Sexual Exploitation. \nS5: Specialized Advice." in prompt
    assert "S10: Suicide & Self-Harm. \nS11: Sexual Content. \n<END UNSAFE CONTENT CATEGORIES>" in prompt
    assert "User: hi\n\nAgent: hello\n\n<END CONVERSATION>" in prompt and "be nice" not in prompt
    assert "ONLY THE LAST Agent message" in prompt and prompt.endswith("[/INST]")
    assert "'User' messages" in build_prompt(convo[:2])
    assert parse_output(" safe") == ("safe", "", None)
    assert parse_output("unsafe\nS1,S3") == ("unsafe", "S1,S3", None)
    assert parse_output("unsafe\nS10, S2\n") == ("unsafe", "S2,S10", None)
    assert parse_output("unsafe\nS12")[1] is None and "unknown categories" in parse_output("unsafe\nS12")[2]
    assert parse_output("maybe")[0] is None and "not a Llama Guard answer" in parse_output("maybe")[2]
    assert vocab.HAZARDS["S3"] == "Sex Crimes" and vocab.HAZARDS["S10"] == "Suicide & Self-Harm"


def test_judge_prompts_define_each_category_and_safety_says_it_is_a_judge() -> None:
    from core.tags.taggers.llm_judge import PROMPTS, JudgeTagger

    for cat, definition in vocab.CATEGORY_DEFINITIONS.items():
        assert f"- {cat}: {definition}" in PROMPTS["category"]
    assert list(vocab.CATEGORY_DEFINITIONS) == vocab.TASK_CATEGORIES
    assert "S4: Child Sexual Exploitation" in PROMPTS["safety"]
    judge = JudgeTagger(object(), ["safety", "category"], label="m at u")  # type: ignore[arg-type]
    assert "not a Llama Guard model" in judge.methods()["safety"]
    assert "Magpie" in judge.methods()["category"]
