"""Contamination checks on real data: GSM8K test items planted into real GSM8K training data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from core import cli, contamination, selection
from core.ingest import ingest_records
from core.store import Store

N_EVAL = 150  # a slice of the GSM8K test split keeps the embedding step to seconds on 2 cores
N_TRAIN = 150
VERBATIM = [0, 5, 10, 15, 20]
# Light edits: clauses reordered, numbers and names changed; few 13-grams survive.
PARAPHRASES = {
    1: "How many bolts does a robe take in total, if it needs 3 bolts of blue fibre and half as much white fibre?",
    3: "Each week Jim runs 4 sprints 3 times, and every sprint is 50 meters long. What distance does he run in a week?",
    6: "Seattle has 30 sheep. Charleston has 4 times as many sheep as Seattle, and Toulouse has twice as many as "
       "Charleston. How many sheep do the three cities have together?",
}


def _jsonl(path: Path) -> list[dict]:
    with path.open() as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def gsm(shared: Path) -> dict[str, list[dict]]:
    return {"test": _jsonl(shared / "gsm8k" / "test.jsonl")[:N_EVAL],
            "train": _jsonl(shared / "gsm8k" / "train.jsonl")[:N_TRAIN]}


def _qa(rows: list[dict]) -> list[dict]:
    return [{"question": r["question"], "answer": r["answer"]} for r in rows]


@pytest.fixture(scope="module")
def planted(tmp_path_factory, gsm, shared) -> tuple[Store, dict[str, list[int]]]:
    """A store with the eval slice, mt-bench, and a training set holding verbatim and paraphrased eval items."""
    store = Store(tmp_path_factory.mktemp("contam") / "store.duckdb", busy_timeout=5)
    ingest_records(store, _qa(gsm["test"]), name="gsm8k-test", shape="qa", is_eval=True, license="MIT")
    ingest_records(store, _jsonl(shared / "mt-bench" / "mt_bench_question.jsonl"), name="mt-bench", shape="turns",
                   is_eval=True)
    records = _qa(gsm["train"])
    for i in VERBATIM:  # one inside a longer text, so the span must point into the middle
        q = gsm["test"][i]["question"]
        records.append({"question": f"Solve this carefully. {q}" if i == 0 else q, "answer": gsm["test"][i]["answer"]})
    for q in PARAPHRASES.values():
        records.append({"question": q, "answer": "Let me work it out step by step."})
    ingest_records(store, records, name="train", shape="qa")
    ids = store.query_df("SELECT id, row_idx FROM samples s JOIN datasets d USING (dataset_id) WHERE d.name = 'train' "
                         "ORDER BY row_idx")["id"].tolist()
    eval_ids = store.query_df("SELECT id FROM samples s JOIN datasets d USING (dataset_id) "
                              "WHERE d.name = 'gsm8k-test' ORDER BY row_idx")["id"].tolist()
    return store, {"train": ids, "eval": eval_ids}


@pytest.fixture(scope="module")
def report(planted) -> contamination.ContaminationReport:
    store, _ = planted
    return contamination.check_contamination(store, "train", ["gsm8k-test", "mt-bench"])


def test_verbatim_items_found_by_ngrams_with_spans(planted, report, gsm) -> None:
    store, ids = planted
    res = contamination.results(store, report.run_id)
    res = res[res.eval_set == "gsm8k-test"].set_index("sample_id")
    for k, i in enumerate(VERBATIM):
        sid = ids["train"][N_TRAIN + k]
        row = res.loc[sid]
        assert row.flag_ngram13 and row.flag_ngram8, f"verbatim test item {i} not flagged"
        assert row.ngram13_eval_id == ids["eval"][i]
        assert row.ngram8_eval_frac == pytest.approx(1.0)
    # The span of the item planted after a prefix starts at the question, not at the prefix.
    first = res.loc[ids["train"][N_TRAIN]]
    spans = json.loads(first.ngram13_spans)
    text = contamination.sample_text(store, ids["train"][N_TRAIN])
    assert text[spans[0][0]:].startswith("Janet")
    assert "Janet" in text[spans[0][0]:spans[0][1]] and "Solve" not in text[spans[0][0]:spans[0][1]]
    html = contamination.highlight_html("<b>x</b> " + text, [(s + 9, e + 9) for s, e in spans])
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<mark" in html


def test_paraphrases_found_by_embeddings(planted, report) -> None:
    store, ids = planted
    res = contamination.results(store, report.run_id)
    res = res[res.eval_set == "gsm8k-test"].set_index("sample_id")
    start = N_TRAIN + len(VERBATIM)
    for k, i in enumerate(PARAPHRASES):
        row = res.loc[ids["train"][start + k]]
        assert not row.flag_ngram13, "a paraphrase should share no 13-gram"
        assert row.flag_embedding, f"paraphrase of test item {i} missed (cosine {row.embed_cosine:.3f})"
        assert row.embed_eval_id == ids["eval"][i]


def test_summary_per_eval_set(planted, report) -> None:
    summary = report.summary.set_index("eval_set")
    assert summary.loc["gsm8k-test", "n_eval_items"] == N_EVAL
    assert summary.loc["gsm8k-test", "n_ngram13"] >= len(VERBATIM)
    assert summary.loc["gsm8k-test", "n_eval_items_hit"] >= len(VERBATIM) + len(PARAPHRASES)
    assert summary.loc["gsm8k-test", "n_eval_items_palm"] >= len(VERBATIM)
    assert summary.loc["mt-bench", "n_contaminated"] == 0
    hit = contamination.eval_items_hit(planted[0], report.run_id, "gsm8k-test")
    assert set(planted[1]["eval"][i] for i in VERBATIM) <= set(hit.eval_sample_id)
    run = planted[0].runs().set_index("run_id").loc[report.run_id]
    assert run.kind == "contamination" and run.status == "finished"


def test_exclude_flagged(planted, report) -> None:
    store, _ = planted
    flagged = contamination.flagged_ids(store, report.run_id)
    selection.exclude(store, flagged, reason="contamination", origin=f"contamination run {report.run_id}")
    assert flagged <= selection.excluded_ids(store)


def test_no_false_alarm_on_unrelated_real_data(planted, shared) -> None:
    store, _ = planted  # the eval slice's vectors are cached in this store already
    with (shared / "alpaca-gpt4-demo-1k" / "alpaca_en_demo.json").open() as fh:
        alpaca = json.load(fh)[:200]
    ingest_records(store, alpaca, name="alpaca", shape="alpaca")
    rep = contamination.check_contamination(store, "alpaca", ["gsm8k-test", "mt-bench"])
    assert rep.summary["n_contaminated"].sum() == 0
    res = contamination.results(store, rep.run_id)
    assert res.embed_cosine.max() < contamination.DEFAULTS["embed_threshold"]


def test_frequent_13grams_are_ignored(tmp_path, gsm) -> None:
    """GPT-3's rule: a 13-gram in more than max_train_df training samples is boilerplate, not a leak."""
    store = Store(tmp_path / "s.duckdb", busy_timeout=5)
    ingest_records(store, _qa(gsm["test"][:20]), name="ev", shape="qa", is_eval=True)
    q = gsm["test"][3]["question"]
    records = _qa(gsm["train"][:30]) + [{"question": q, "answer": f"variant {k}"} for k in range(12)]
    ingest_records(store, records, name="tr", shape="qa")
    strict = contamination.check_contamination(store, "tr", methods=["ngram13", "ngram8"], max_train_df=10)
    loose = contamination.check_contamination(store, "tr", methods=["ngram13", "ngram8"], max_train_df=100)
    assert strict.summary["n_ngram13"].iloc[0] == 0
    assert strict.summary["n_ngram8"].iloc[0] == 12  # PaLM's rule has no such exception
    assert loose.summary["n_ngram13"].iloc[0] == 12


def test_cli_contamination_json(planted, capsys) -> None:
    store, _ = planted
    rc = cli.main(["--db", str(store.path), "contamination", "--dataset", "train", "--against", "gsm8k-test",
                   "--methods", "ngram13,ngram8", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["summary"][0]["n_ngram13"] >= len(VERBATIM)
    rc = cli.main(["--db", str(store.path), "contamination", "--dataset", "train", "--against", "train", "--json"])
    assert rc == 2 and "not marked as an evaluation set" in capsys.readouterr().out


# ---- Min-K% Prob on a tiny model the test builds -----------------------------------------------------

def _tiny_lm(folder: Path, texts: list[str]) -> Path:
    """A 2-layer GPT-2 with a word-level tokenizer trained on `texts`, saved like any hub model."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[EOS]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]", pad_token="[EOS]")
    config = GPT2Config(vocab_size=fast.vocab_size, n_positions=256, n_embd=64, n_layer=2, n_head=2,
                        eos_token_id=fast.eos_token_id, bos_token_id=fast.eos_token_id)
    model = GPT2LMHeadModel(config)
    fast.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def _train(folder: Path, texts: list[str], steps: int = 60) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=128)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(folder)


def test_min_k_prob_matches_definition_and_separates_seen_texts(tmp_path, gsm) -> None:
    import torch

    questions = [r["question"] for r in gsm["train"][:40]]
    seen, unseen = questions[:20], questions[20:]
    folder = _tiny_lm(tmp_path / "tiny", questions)
    model, tok, device = contamination.load_causal_lm(str(folder), device="cpu")
    # k = 100% is the mean token log-probability, computed here by hand.
    enc = tok(seen[0], return_tensors="pt")
    with torch.no_grad():
        logp = torch.log_softmax(model(**enc).logits[0, :-1], -1)
    manual = logp.gather(-1, enc["input_ids"][0, 1:, None]).mean().item()
    scores = contamination.min_k_prob(seen[:3], model, tok, k=1.0, device=device, batch_size=2)
    assert scores[0] == pytest.approx(manual, abs=1e-4)
    low = contamination.min_k_prob(seen[:3], model, tok, k=0.2, device=device)
    assert np.all(low <= scores + 1e-6)
    _train(folder, seen)
    model, tok, device = contamination.load_causal_lm(str(folder), device="cpu")
    s_seen = contamination.min_k_prob(seen, model, tok, k=0.2, device=device)
    s_unseen = contamination.min_k_prob(unseen, model, tok, k=0.2, device=device)
    assert s_seen.mean() > s_unseen.mean() + 1.0, (s_seen.mean(), s_unseen.mean())
    # Through a recorded run: eval items the model memorised score higher than the training samples.
    store = Store(tmp_path / "s.duckdb", busy_timeout=5)
    ingest_records(store, [{"text": q} for q in seen], name="ev", shape="text", is_eval=True)
    ingest_records(store, [{"text": q} for q in unseen], name="tr", shape="text")
    rep = contamination.check_contamination(store, "tr", methods=["mink"], mink_model=str(folder), mink_k=0.2,
                                            mink_threshold=0.0)
    row = rep.summary.iloc[0]
    assert row.eval_mink_mean > row.train_mink_mean
    assert not math.isnan(row.train_mink_mean) and row.n_mink == 0
    with pytest.raises(ValueError, match="between 5% and 60%"):
        contamination.check_contamination(store, "tr", methods=["mink"], mink_model=str(folder), mink_k=0.9)
