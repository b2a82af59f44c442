"""The transformers paths on tiny randomly initialised models the test builds and saves: reward models
(AutoModelForSequenceClassification, single and ensemble, with a chat template that emits BOS), local judge
generation (a tiny GPT-2 whose garbage answers must be recorded as parse errors) and a Llama Guard stand-in
whose generation the test controls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import core.tags.results as T
from core.ingest.importer import ingest_records
from core.store.database import Store
from core.tags.taggers.job import run_tagging
from core.tags.taggers.llm_judge import LocalGenerator
from core.tags.taggers.reward_models import RewardModel, aggregate, calibrate

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
                      aggregation="uwo", lam=0.5)
    long = T.run_tags(loaded, ens.run_id)
    per_model = long[long["tag"].str.startswith("reward:")].pivot(index="sample_id", columns="tag", values="score")
    agg = long[(long["tag"] == "response_quality") & (long["status"] == "ok")].set_index("sample_id")["score"]
    assert list(per_model.columns) == ["reward:0", "reward:1"] and len(agg) == 4
    # each model normalised once on the fixed calibration set (recorded with the run), then mean - 0.5 var
    cal = [calibrate(RewardModel(m, device="cpu")) for m in (a, b)]
    z = np.stack([(per_model[f"reward:{i}"] - c["mean"]) / c["std"] for i, c in enumerate(cal)], axis=1)
    assert np.allclose(agg.to_numpy(), aggregate(z[per_model.index.get_indexer(agg.index)], "uwo", 0.5))
    recorded = ens.metrics["response_quality"]
    assert recorded["calibration_set"] == "assay-rm-calibration-v1" and recorded["lambda"] == 0.5
    assert recorded["calibration"][a]["mean"] == pytest.approx(cal[0]["mean"])
    assert "ensemble of 2 reward models" in recorded["method"] and "seeds of one model" in recorded["method"]
    assert T.compare_runs(loaded, single.run_id, ens.run_id).set_index("tag").loc["response_quality", "n_common"] == 5
    # a sample's ensemble score is the same tagged alone as tagged with the others
    alone = run_tagging(loaded, dataset="tiny", tags="response_quality", backend="transformers", reward_models=[a, b],
                        aggregation="uwo", lam=0.5, limit=1)
    one = T.run_tags(loaded, alone.run_id, ["response_quality"]).set_index("sample_id")["score"]
    # (up to float noise from padding in a batch, ~1e-5 on a raw reward, scaled up by 1/calibration std)
    assert one.loc[first] == pytest.approx(agg.loc[first], abs=1e-5 / min(c["std"] for c in cal))


def _bos_reward_model(folder: Path) -> str:
    """A reward model whose tokenizer adds a BOS itself and whose chat template also writes one, as
    Llama-3 reward models (FsfairX-LLaMA3-RM) do."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    words = sorted({w for r in RECORDS for w in (r.get("instruction", "") + " " + r.get("output", "")).split()})
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "<bos>", "<eos>", "<user>", "<assistant>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", bos_token="<bos>",
                                   eos_token="<eos>")
    fast.chat_template = ("{{ bos_token }}{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} <eos> "
                          "{% endfor %}")
    fast.save_pretrained(folder)
    torch.manual_seed(3)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=1, pad_token_id=vocab["[PAD]"])
    BertForSequenceClassification(config).save_pretrained(folder)
    return str(folder)


def test_reward_model_input_has_exactly_one_bos(tmp_path: Path) -> None:
    path = _bos_reward_model(tmp_path / "bos")
    rm = RewardModel(path, device="cpu")
    bos = rm.tokenizer.bos_token_id
    assert rm.tokenizer("Add 2 and 3.")["input_ids"][0] == bos  # the tokenizer adds one by itself
    convs = [[{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}]
             for r in RECORDS[:3]]
    text, special = rm.render(convs[0])
    assert text.startswith("<bos><user> What is the capital") and special is False  # the template writes it
    enc = rm.encode(convs)
    for ids, mask in zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist(), strict=True):
        real = [i for i, m in zip(ids, mask, strict=True) if m]
        assert real.count(bos) == 1 and real[0] == bos
    assert np.isfinite(rm.score(convs)).all()


def _guard_model(folder: Path, answer: str) -> str:
    """A causal LM that always answers `answer` and stops: its lm_head is all zeros, so greedy decoding
    picks token 0, which is `answer` and the end-of-sequence token."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {answer: 0, "[UNK]": 1, "[PAD]": 2, "[EOS]": 3, "User:": 4, "Agent:": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                            eos_token="[EOS]").save_pretrained(folder)
    config = GPT2Config(vocab_size=len(vocab), n_embd=16, n_layer=1, n_head=2, n_positions=4096,
                        tie_word_embeddings=False, eos_token_id=0, bos_token_id=0, pad_token_id=2)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    model.save_pretrained(folder)
    return str(folder)


def test_llama_guard_model_makes_safety(loaded: Store, tmp_path: Path) -> None:
    from core.tags.taggers.llama_guard import LlamaGuardModel

    path = _guard_model(tmp_path / "guard", "unsafe\nS1,S3")
    assert LlamaGuardModel(path, device="cpu").generate([[{"role": "user", "content": "hi"}]]) == ["unsafe\nS1,S3"]
    report = run_tagging(loaded, dataset="tiny", tags="safety", guard_model=path, limit=3)
    rows = T.run_tags(loaded, report.run_id).pivot(index="sample_id", columns="tag", values="value")
    assert (rows["safety"] == "unsafe").all() and (rows["hazards"] == "S1,S3").all()
    assert report.computed == ["safety", "hazards"] and "Llama Guard model" in report.metrics["safety"]["method"]
    assert "Llama Guard 2" in T.tag_runs(loaded, "tiny").iloc[0]["methods"]["safety"]


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
