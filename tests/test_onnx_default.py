"""The default CPU embedding path: ONNX fp32 exports made once, checked, cached beside the store, rebuilt
when damaged; torch where the export fails (the reason recorded); int8 vectors kept apart from exact ones.

Tiny sentence-transformers models (one BERT layer, 32 dims) are built here once per session; the real
bundled model is used only where the claim is about it (exactness of its export, noise's run choice)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import core.maps.embed as E
import core.maps.onnx_models as onnx_models
from core.ingest.importer import ingest_records
from core.maps.embed import embed, load_vectors
from core.store.database import Store
from tests.test_embed import read_jsonl

WORDS = "the a of to and is in how many what apples has does natalia left total each she he more".split()
N = 24


def _build(folder: Path, pooling: str) -> str:
    import torch
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers import models as tok_models
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    try:
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:  # sentence-transformers before 6
        from sentence_transformers.models import Normalize, Pooling, Transformer

    hf = folder / "hf"
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = Tokenizer(tok_models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", model_max_length=16).save_pretrained(hf)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(hf)
    modules = [Transformer(str(hf), max_seq_length=16), Pooling(32, pooling_mode=pooling), Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder / "st"))
    return str(folder / "st")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A mean-pooled model (exportable) and a CLS-pooled one (the export refuses it)."""
    root = tmp_path_factory.mktemp("tiny-st")
    return SimpleNamespace(mean=_build(root / "mean", "mean"), cls=_build(root / "cls", "cls"))


@pytest.fixture(scope="session")
def texts(shared: Path) -> list[str]:
    return [r["question"] for r in read_jsonl(shared / "gsm8k" / "train.jsonl", N)]


def _reference(model: str, texts: list[str]) -> np.ndarray:
    return E.get_embedder(model, backend="torch", device="cpu").encode(texts)


def test_export_is_exact_cached_and_reused(tiny: SimpleNamespace, texts: list[str], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "exports"
    first = onnx_models.load(tiny.mean, root)
    assert first.meta["max_abs_diff_to_torch"] <= onnx_models.EXACT_TOLERANCE
    assert np.abs(first.encode(texts) - _reference(tiny.mean, texts)).max() < 1e-6
    # The second load reads the cache: building again would fail here.
    monkeypatch.setattr(onnx_models, "_build_fp32", lambda *a: pytest.fail("exported twice"))
    again = onnx_models.load(tiny.mean, root)
    assert again.folder == first.folder and again.meta == first.meta
    assert [p.name for p in root.iterdir()] == [first.folder.name]  # no temporary folder left behind
    # Other model files are another revision: another folder, never the old export.
    copy = tmp_path / "edited"
    shutil.copytree(tiny.mean, copy)
    (copy / "README.md").write_text("edited")
    assert onnx_models.model_revision(str(copy)).digest != onnx_models.model_revision(tiny.mean).digest


def test_damaged_export_is_rebuilt(tiny: SimpleNamespace, texts: list[str], tmp_path: Path) -> None:
    root = tmp_path / "exports"
    good = onnx_models.load(tiny.mean, root)
    expected = good.encode(texts)
    onnx = good.folder / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])  # a half-written file
    rebuilt = onnx_models.load(tiny.mean, root)
    assert rebuilt.folder == good.folder and onnx.stat().st_size == rebuilt.meta["onnx_bytes"]
    assert np.array_equal(rebuilt.encode(texts), expected)
    (good.folder / "meta.json").write_text("{not json")
    assert np.array_equal(onnx_models.load(tiny.mean, root).encode(texts), expected)
    assert [p.name for p in root.iterdir()] == [good.folder.name]  # broken copies were removed


def test_auto_is_onnx_beside_the_store_and_shares_torch_vectors(store: Store, tiny: SimpleNamespace, shared: Path,
                                                                 texts: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSAY_ONNX_DIR")
    ingest_records(store, read_jsonl(shared / "gsm8k" / "train.jsonl", N), name="g", shape="qa")
    auto = embed(store, "g", model=tiny.mean)
    assert auto.computed_with.startswith("onnxruntime fp32") and auto.fallback_reason is None
    assert any((store.path.parent / ".assay-onnx").glob("st-*-fp32/model.onnx"))  # cached beside the store
    run = store.runs().set_index("run_id").loc[auto.run_id]
    assert json.loads(run.metrics)["computed_with"] == auto.computed_with and "ONNX export" in run.model_revision
    # torch asks for the same (exact) vectors: every one is served from the cache, and they match torch's.
    torch_run = embed(store, "g", model=tiny.mean, backend="torch")
    assert torch_run.model_key == auto.model_key and (torch_run.n_cached, torch_run.n_computed) == (N, 0)
    ids, vectors = load_vectors(store, auto.run_id)
    assert np.abs(vectors - _reference(tiny.mean, texts)).max() < 1e-6  # ids ascend in ingest order
    assert "exact fp32" in E.run_vectors_note(store, auto.run_id)


def test_failed_export_falls_back_to_torch_with_the_reason(store: Store, tiny: SimpleNamespace, shared: Path,
                                                           texts: list[str]) -> None:
    ingest_records(store, read_jsonl(shared / "gsm8k" / "train.jsonl", N), name="g", shape="qa")
    report = embed(store, "g", model=tiny.cls)
    assert report.computed_with.startswith("torch fp32") and "pooling cls" in report.fallback_reason
    metrics = store.runs().set_index("run_id").loc[report.run_id].metrics  # how it ran, not what was asked
    assert "pooling cls" in json.loads(metrics)["fallback_reason"]
    assert "pooling cls" in E.fallback_note("embed", metrics)  # the home page's runs table shows it
    assert "pooling cls" in E.run_vectors_note(store, report.run_id)  # and the Map page, under the map
    assert np.abs(load_vectors(store, report.run_id)[1] - _reference(tiny.cls, texts)).max() < 1e-6


def test_int8_vectors_never_answer_an_exact_request(store: Store, shared: Path) -> None:
    from core.noise.features import _covering_run

    ingest_records(store, read_jsonl(shared / "gsm8k" / "test.jsonl", 16), name="g", shape="qa")
    ids = store.query_df("SELECT id FROM samples ORDER BY id").id.to_numpy()
    approx = embed(store, "g", backend="onnx-int8")
    assert approx.model_key.endswith("|int8") and "int8" in E.run_vectors_note(store, approx.run_id)
    assert _covering_run(store, "g", ids, "instruction") is None  # noise does not take the int8 run
    exact = embed(store, "g")
    assert exact.model_key != approx.model_key and (exact.n_cached, exact.n_computed) == (0, 16)
    assert _covering_run(store, "g", ids, "instruction") == exact.run_id
    cos = (load_vectors(store, approx.run_id)[1] * load_vectors(store, exact.run_id)[1]).sum(1)
    assert 0.95 < cos.mean() < 1.0  # close, and not the same numbers


def test_int8_agreement_comes_from_the_bench_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    from core.cli.main import build_parser

    assert E.agreement(E.DEFAULT_MODEL, "onnx-int8"), "embed_agreement.json lacks bench/embed_throughput.py's figures"
    record = tmp_path / "agreement.json"
    figures = {"mean_cosine": 0.9871, "min_cosine": 0.9512, "knn10_overlap": 0.812, "n_texts": 500,
               "data": "test questions", "command": "python -m bench.embed_throughput", "measured_at": "2026-01-02"}
    E.record_agreement("some-model", "onnx-int8", figures, path=record)
    monkeypatch.setattr(E, "AGREEMENT_FILE", record)
    assert "mean cosine 0.9871" in E.agreement_text("some-model") and "10-NN overlap 0.812" in E.agreement_text("some-model")
    assert "not been measured" in E.agreement_text(E.DEFAULT_MODEL)
    E.record_agreement(E.DEFAULT_MODEL, "onnx-int8", figures, path=record)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["embed", "--help"])
    assert "0.9871" in " ".join(capsys.readouterr().out.split())
