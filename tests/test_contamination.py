"""Contamination checks on real data: GSM8K test items planted into real GSM8K training data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import core.browse.selections as selection
import core.cli.main as cli
import core.contamination.check as contamination
from core import textnorm
from core.ingest.importer import ingest_records
from core.store.database import Store

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


def test_answers_match_an_independent_unbatched_reference(planted, report) -> None:
    """Every answer of the default run (n-grams beside the embedding stage, ONNX batches by token count)
    equals a reference made apart: an n-gram-only run, and torch embeddings of one text at a time (no
    batch, no padding) with a brute-force nearest eval item: same flags, same matched items, cosines to 1e-5."""
    import core.maps.embed as embed

    store, _ = planted
    got = contamination.results(store, report.run_id).set_index(["sample_id", "eval_set"]).sort_index()
    alone = contamination.check_contamination(store, "train", ["gsm8k-test", "mt-bench"], methods=["ngram13", "ngram8"])
    ref = contamination.results(store, alone.run_id).set_index(["sample_id", "eval_set"]).sort_index()
    ngram = [c for c in ref.columns if c.startswith(("ngram", "flag_ngram"))]
    assert ngram and len(ref) and ref.index.isin(got.index).all()
    assert got.loc[ref.index, ngram].astype(str).equals(ref[ngram].astype(str))
    rest = got.drop(index=ref.index)  # rows only the embedding method put there: no n-gram answer
    assert not rest.flag_ngram13.fillna(False).any() and not rest.flag_ngram8.fillna(False).any()
    assert rest.ngram13_eval_id.isna().all() and rest.ngram8_eval_id.isna().all()

    model = embed.get_embedder(backend="torch")._st  # noqa: SLF001 - the plain sentence-transformers model

    def vectors(name: str) -> tuple[np.ndarray, np.ndarray]:
        df = store.query_df(f"SELECT s.id, {embed.text_sql('user')} AS t FROM samples s JOIN datasets d "
                            "USING (dataset_id) WHERE d.name = ? ORDER BY s.id", [name])
        vecs = np.vstack([model.encode([t], normalize_embeddings=True) for t in df.t])
        return df.id.to_numpy(), vecs

    train_ids, train = vectors("train")
    threshold = contamination.run_params(store, report.run_id)["embed_threshold"]
    for name in ("gsm8k-test", "mt-bench"):
        eval_ids, evals = vectors(name)
        sims = train @ evals.T
        rows = got.xs(name, level="eval_set").loc[train_ids]
        assert (rows.embed_eval_id.to_numpy() == eval_ids[sims.argmax(axis=1)]).all(), name
        assert np.abs(rows.embed_cosine.to_numpy() - sims.max(axis=1)).max() < 1e-5, name
        assert (rows.flag_embedding.to_numpy() == (sims.max(axis=1) >= threshold)).all(), name


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
    # The cap is GPT-3's, but what it hid is reported: the one eval item, its n-grams, in 12 samples.
    row = strict.summary.iloc[0]
    assert row.n_eval_items_capped == 1 and row.n_capped_ngrams > 0
    capped = contamination.capped_ngrams(store, strict.run_id)
    eval_ids = store.query_df("SELECT id FROM samples s JOIN datasets d USING (dataset_id) WHERE d.name = 'ev' "
                              "ORDER BY row_idx")["id"].tolist()
    assert set(capped.eval_sample_id) == {eval_ids[3]} and set(capped.n_train_samples) == {12}
    assert set(capped.eval_set) == {"ev"}
    assert all(" ".join(c.split()) in " ".join(textnorm.gpt3_words(q)) for c in capped.ngram)
    assert loose.summary["n_capped_ngrams"].iloc[0] == 0


def test_gpt3_normalisation_and_n_per_benchmark() -> None:
    # Brown et al. 2020, appendix C: lower case, whitespace-delimited words, punctuation removed.
    assert textnorm.gpt3_words("She's paid $2.50 -- really?") == ["shes", "paid", "250", "really"]
    assert textnorm.gpt3_words("“Ünïcode” — ok…") == ["ünïcode", "ok"]
    words, spans = textnorm.gpt3_word_spans("Hi, she's  here.")
    assert words == ["hi", "shes", "here"] and spans == [(0, 3), (4, 9), (11, 16)]
    # N = 5th percentile of item lengths in words, clamped to 8..13. Lengths 1..20: numpy's linear
    # interpolation gives 1 + 0.05 x 19 = 1.95 -> 8 (clamped). Lengths 10 (x19) and 30: position
    # 0.05 x 19 = 0.95 between the sorted values 10 and 10 -> 10. Lengths 20..39 -> 20.95 -> 13.
    assert contamination.gpt3_n(list(range(1, 21))) == 8
    assert contamination.gpt3_n([10] * 19 + [30]) == 10
    assert contamination.gpt3_n(list(range(20, 40))) == 13
    # 9, 11 x 9 words and 40 x 10: sorted position 0.05 x 19 = 0.95 -> 9 + 0.95 x (11 - 9) = 10.9 -> 10.
    assert contamination.gpt3_n([9] + [11] * 9 + [40] * 10) == 10


def test_short_items_are_matched_with_their_benchmarks_n(tmp_path) -> None:
    """A benchmark of 11-word prompts gets N = 11: a copy of one is flagged (13-grams never could be),
    and GPT-3's normalisation matches it through case and punctuation changes."""
    store = Store(tmp_path / "s.duckdb", busy_timeout=5)
    prompts = [f"Write a short poem about the colour {c} and the sea." for c in
               ("red", "blue", "green", "grey", "gold", "white", "black", "pink", "teal", "cyan")]
    assert {len(textnorm.gpt3_words(p)) for p in prompts} == {11}
    ingest_records(store, [{"text": p} for p in prompts], name="short-bench", shape="text", is_eval=True)
    train = [{"text": "Please: WRITE a short poem about the colour Teal, and the sea!! Thanks."},
             {"text": "Write a short poem about the colour of the sea."}]
    ingest_records(store, train, name="tr", shape="text")
    rep = contamination.check_contamination(store, "tr", methods=["ngram13"])
    row = rep.summary.iloc[0]
    assert row.gpt3_n == 11 and row.n_ngram13 == 1
    res = contamination.results(store, rep.run_id, flagged_only=True)
    eval_ids = store.query_df("SELECT id FROM samples s JOIN datasets d USING (dataset_id) WHERE d.name = "
                              "'short-bench' ORDER BY row_idx")["id"].tolist()
    assert res.ngram13_eval_id.tolist() == [eval_ids[8]]
    text = contamination.sample_text(store, int(res.sample_id.iloc[0]))
    (start, end), = json.loads(res.ngram13_spans.iloc[0])
    assert text[start:end] == "WRITE a short poem about the colour Teal, and the sea!!"
    assert "GPT-3" in contamination.run_params(store, rep.run_id)["method_notes"]["ngram13"]


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


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, gsm) -> Path:
    """The untrained tiny LM, built once; torch on one thread (two threads on a loaded 2-core box spin)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield _tiny_lm(tmp_path_factory.mktemp("tiny"), [r["question"] for r in gsm["train"][:40]])
    torch.set_num_threads(threads)


def _by_hand(model, tok, text: str | list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per predicted token, from the logits of the text alone (numpy): log p(x_t|x<t), and Min-K%++'s
    (log p - mu) / sigma with mu = sum_z p(z) log p(z), sigma^2 = sum_z p(z) (log p(z) - mu)^2
    (Zhang et al. 2024, eq. for the per-token score)."""
    import torch

    ids = tok(text)["input_ids"] if isinstance(text, str) else text
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double().numpy()
    logits = logits[:-1]
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    target = logp[np.arange(len(ids) - 1), ids[1:]]
    p = np.exp(logp)
    mu = (p * logp).sum(-1)
    sigma = np.sqrt((p * (logp - mu[:, None]) ** 2).sum(-1))
    return target, (target - mu) / sigma


def test_min_k_scores_match_the_papers_definitions(tiny) -> None:
    model, tok, device = contamination.load_causal_lm(str(tiny), device="cpu")
    text = "Natalia sold clips to 48 of her friends"  # 8 words: 8 tokens, 7 predicted
    lp, z = _by_hand(model, tok, text)
    assert len(lp) == 7
    # Shi et al.: k% of the n predicted tokens by floor (the reference's int(n * k)), at least one:
    # k = 0.2 -> floor(1.4) = 1 token (a ceiling would take 2); k = 0.5 -> floor(3.5) = 3 tokens.
    for k, m in ((0.2, 1), (0.5, 3), (1.0, 7)):
        got = contamination.min_k_prob([text], model, tok, k=k, device=device)[0]
        assert got == pytest.approx(np.sort(lp)[:m].mean(), abs=1e-5)
        got_pp = contamination.min_k_plus_plus([text], model, tok, k=k, device=device)[0]
        assert got_pp == pytest.approx(np.sort(z)[:m].mean(), abs=1e-4)
    assert contamination.min_k_prob(["one"], model, tok, device=device)[0] != contamination.min_k_prob(
        ["one"], model, tok, device=device)[0]  # one token predicts nothing: NaN


def test_min_k_score_does_not_depend_on_its_batch_and_long_texts_are_windowed(tiny, gsm) -> None:
    questions = [r["question"] for r in gsm["train"][:40]]
    model, tok, device = contamination.load_causal_lm(str(tiny), device="cpu")
    tok.padding_side = "left"  # as many chat models' tokenizers ship: must not shift positions or scores
    short = "Natalia sold clips to 48 of her friends"
    longer = questions[:5]
    alone = contamination.token_scores([short], model, tok, device=device)
    batched = contamination.token_scores([*longer, short], model, tok, device=device, batch_size=6)
    np.testing.assert_allclose(batched.logprob[-1], alone.logprob[0], rtol=0, atol=1e-6)
    # z divides by sigma, small for this untrained model: computed in float32 it moved by 1.6e-5 with the
    # batch's shape (CI); in float64 by at most 3.6e-7 over 44 shapes.
    np.testing.assert_allclose(batched.zscore[-1], alone.zscore[0], rtol=0, atol=1e-5)
    # A text longer than the window: every token scored once (no truncation), the first window's tokens as
    # in a single pass, later ones with at least half a window of context.
    long_text = " ".join(questions[:3])
    full, _ = _by_hand(model, tok, long_text)
    windowed = contamination.token_scores([long_text], model, tok, device=device, max_length=16)
    assert windowed.window == 16 and windowed.n_windowed == 1
    assert len(windowed.logprob[0]) == len(full) > 16
    np.testing.assert_allclose(windowed.logprob[0][:15], full[:15], atol=1e-5)
    ids = tok(long_text)["input_ids"]
    lp16, _ = _by_hand(model, tok, ids[8:24])  # tokens 16..23 scored in the window 8..23
    np.testing.assert_allclose(windowed.logprob[0][15:23], lp16[7:15], atol=1e-5)


def test_min_k_prob_scores_eval_items_and_separates_seen_texts(tiny, tmp_path, gsm) -> None:
    import shutil

    questions = [r["question"] for r in gsm["train"][:40]]
    seen, unseen = questions[:20], questions[20:]
    folder = Path(shutil.copytree(tiny, tmp_path / "trained"))
    _train(folder, seen)
    model, tok, device = contamination.load_causal_lm(str(folder), device="cpu")
    s_seen = contamination.min_k_prob(seen, model, tok, k=0.2, device=device)
    s_unseen = contamination.min_k_prob(unseen, model, tok, k=0.2, device=device)
    assert s_seen.mean() > s_unseen.mean() + 1.0, (s_seen.mean(), s_unseen.mean())
    pp_seen = contamination.min_k_plus_plus(seen, model, tok, k=0.2, device=device)
    pp_unseen = contamination.min_k_plus_plus(unseen, model, tok, k=0.2, device=device)
    assert pp_seen.mean() > pp_unseen.mean()
    # Through a recorded run: each eval set's items are scored (was it in the LM's training data?);
    # training samples are never flagged from their own score.
    store = Store(tmp_path / "s.duckdb", busy_timeout=5)
    ingest_records(store, [{"text": q} for q in seen], name="ev-seen", shape="text", is_eval=True)
    ingest_records(store, [{"text": q} for q in unseen], name="ev-unseen", shape="text", is_eval=True)
    ingest_records(store, [{"text": q} for q in unseen], name="tr", shape="text")
    rep = contamination.check_contamination(store, "tr", methods=["mink", "minkpp"], mink_model=str(folder),
                                            mink_k=0.2, mink_threshold=-1e9)
    summary = rep.summary.set_index("eval_set")
    assert summary.loc["ev-seen", "eval_mink_mean"] > summary.loc["ev-unseen", "eval_mink_mean"]
    assert summary.loc["ev-seen", "eval_minkpp_mean"] > summary.loc["ev-unseen", "eval_minkpp_mean"]
    assert summary.loc["ev-seen", "n_eval_items_mink"] == 20 and summary["n_contaminated"].sum() == 0
    items = contamination.eval_item_scores(store, rep.run_id, "ev-seen")
    np.testing.assert_allclose(items["mink_score"], s_seen, atol=1e-5)
    np.testing.assert_allclose(items["minkpp_score"], pp_seen, atol=1e-4)
    assert contamination.results(store, rep.run_id).empty
    params = contamination.run_params(store, rep.run_id)
    assert params["mink_scored"] == "eval items" and params["mink_window"] == 256
    assert "Shi et al. 2024" in params["method_notes"]["mink"] and "Zhang et al. 2024" in params["method_notes"]["minkpp"]
    with pytest.raises(ValueError, match="between 5% and 60%"):
        contamination.check_contamination(store, "tr", methods=["mink"], mink_model=str(folder), mink_k=0.9)
