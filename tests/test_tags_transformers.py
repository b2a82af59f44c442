"""The transformers paths on tiny randomly initialised models the test builds and saves: reward models
(AutoModelForSequenceClassification, single and ensemble) and local judge generation (a tiny GPT-2 whose
garbage answers must be recorded as parse errors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core import tags as T
from core.ingest import ingest_records
from core.store import Store
from core.taggers.job import run_tagging
from core.taggers.llm_judge import LocalGenerator
from core.taggers.reward_models import RewardModel, aggregate

RECORDS = [
    {"instruction": "What is the capital of France?", "output": "Paris is the capital of France."},
    {"instruction": "Write a haiku about rain.", "output": "Soft rain on the roof, quiet drums."},
    {"instruction": "Add 2 and 3.", "output": "5"},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                  {"role": "user", "content": "Tell me a joke."}, {"role": "assistant", "content": "No."}]},
    {"messages": [{"role": "user", "content": "A question with no answer yet"}]},
]


def _tokenizer(folder: Path):  # noqa: ANN202
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    words = " ".join(r.get("instruction", "") + " " + r.get("output", "") for r in RECORDS)
    tok.train_from_iterator([words, "user assistant : { } \" primary_tag Math"],
                            trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[EOS]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", eos_token="[EOS]")
    fast.save_pretrained(folder)
    return fast


def _reward_model(folder: Path, seed: int) -> str:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tok = _tokenizer(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=1,
                        pad_token_id=tok.pad_token_id)
    BertForSequenceClassification(config).save_pretrained(folder)
    return str(folder)


def _causal_lm(folder: Path) -> str:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _tokenizer(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=2048,
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture
def loaded(store: Store) -> Store:
    as_chat = [r if "messages" in r else {"messages": [{"role": "user", "content": r["instruction"]},
                                                       {"role": "assistant", "content": r["output"]}]}
               for r in RECORDS]
    ingest_records(store, as_chat, name="tiny", shape="openai", license="MIT")
    return store


def test_reward_model_scores_are_deterministic_and_batch_independent(tmp_path: Path) -> None:
    path = _reward_model(tmp_path / "rm", seed=1)
    convs = [[{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}]
             for r in RECORDS[:3]]
    one = RewardModel(path, device="cpu", batch_size=1).score(convs)
    many = RewardModel(path, device="cpu", batch_size=3).score(convs)
    assert one.shape == (3,) and np.isfinite(one).all()
    assert np.allclose(one, many, atol=1e-5)  # padding and length-sorting do not change a score
    assert len(set(np.round(one, 6))) == 3


def test_single_and_ensemble_reward_runs(loaded: Store, tmp_path: Path) -> None:
    a, b = _reward_model(tmp_path / "a", 1), _reward_model(tmp_path / "b", 2)
    single = run_tagging(loaded, dataset="tiny", tags="response_quality", backend="transformers", reward_models=[a])
    rows = T.run_tags(loaded, single.run_id).set_index("sample_id")
    assert (rows["status"] == "ok").sum() == 4 and (rows["status"] == "not_computed").sum() == 1
    assert rows.loc[rows["status"] == "not_computed", "detail"].iloc[0] == "no assistant response to score"
    direct = RewardModel(a, device="cpu").score([[{"role": "user", "content": RECORDS[0]["instruction"]},
                                                  {"role": "assistant", "content": RECORDS[0]["output"]}]])
    first = int(loaded.query_df("SELECT min(id) AS i FROM samples")["i"][0])
    assert rows.loc[first, "score"] == pytest.approx(direct[0], abs=1e-5)

    ens = run_tagging(loaded, dataset="tiny", tags="response_quality", backend="transformers", reward_models=[a, b],
                      aggregation="mean_minus_std", k=1.0)
    long = T.run_tags(loaded, ens.run_id)
    per_model = long[long["tag"].str.startswith("reward:")].pivot(index="sample_id", columns="tag", values="score")
    agg = long[(long["tag"] == "response_quality") & (long["status"] == "ok")].set_index("sample_id")["score"]
    assert list(per_model.columns) == ["reward:0", "reward:1"] and len(agg) == 4
    expected = aggregate(per_model.loc[agg.index].to_numpy(), "mean_minus_std", 1.0)
    assert np.allclose(agg.to_numpy(), expected)
    assert "ensemble of 2 reward models" in ens.metrics["response_quality"]["method"]
    assert T.compare_runs(loaded, single.run_id, ens.run_id).set_index("tag").loc["response_quality", "n_common"] == 5


def test_local_generation_garbage_is_a_parse_error(loaded: Store, tmp_path: Path) -> None:
    path = _causal_lm(tmp_path / "lm")
    gen = LocalGenerator(path, device="cpu", max_new_tokens=6, batch_size=2)
    assert gen.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "{"}]).endswith(
        "assistant: {")
    report = run_tagging(loaded, dataset="tiny", tags="category,difficulty", backend="transformers", model=path,
                         max_new_tokens=6, limit=3)
    rows = T.run_tags(loaded, report.run_id)
    judged = rows[rows["tag"].isin(["category", "difficulty", "intent"])]
    assert len(judged) == 9 and set(judged["status"]) == {"parse_error"}
    assert judged["value"].isna().all() and judged["detail"].str.len().gt(0).all()
    params = loaded.query_df("SELECT params, model FROM runs WHERE run_id = ?", [report.run_id])
    assert path in params["params"][0] and params["model"][0] == path
