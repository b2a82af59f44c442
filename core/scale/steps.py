"""The heavy steps as small objects both engines run: `setup()` once per worker, `__call__(batch)` per batch.

Each step only wraps the project's own functions (no second implementation of any model or tagger):

- EmbedStep:   core.maps.embed.get_embedder(...).encode; results go into core/maps/embed.py's cache tables through
               core.maps.embed's own writer, so a scale run is an ordinary embedding run for the map pages.
- TagStep:     the offline taggers of core/taggers (language, turns, lengths, zero-shot category); rows go
               into the `tags` table through core.tags.results.write_tags.
- MinHashStep: core.dedup.groups.MinHasher.signatures on the workers; the LSH pass and grouping run once on the
               driver, streaming the signature shards, then core.dedup.groups's grouping and representative rules.
- RewardStep:  core/tags/taggers/reward_models.py's RewardModelTagger (one reward model or an ensemble).

A step object is pickled to the workers, so it holds configuration only until `setup()` loads models.
Driver-side methods (`begin`, `export`, `import_shard`, `finish`) talk to the store; workers never do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.scale.shards import Job, export_query
from core.store.database import Store
from core.store.runs import Run

OFFLINE_TAGS = ("language", "turns", "n_chars", "n_tokens", "category")


class Step:
    """Base class; see the module docstring. `kind` is the kind of run recorded in the runs table."""

    name = "step"
    kind = "step"
    required_columns: tuple[str, ...] = ()

    def config(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    @property
    def uses_gpu(self) -> bool:
        return False

    def resolve_device(self, cluster_has_gpu: bool) -> None:
        """Fix 'auto' devices to what the workers will have (the driver may have no GPU)."""

    def setup(self) -> None:
        """Load models: once per worker (actor), never per batch."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError

    # driver side
    def begin(self, store: Store, dataset: str, engine: str) -> int:
        raise NotImplementedError

    def export(self, store: Store, job: Job, rows_per_shard: int) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def import_shard(self, store: Store, job: Job, table: pa.Table) -> None:
        """Commit one result shard in short transactions; must be safe to repeat (a crash between the
        commit and the 'imported' marker makes the resumed job import it again)."""

    def finish(self, store: Store, job: Job, seconds: float, run: Run) -> dict[str, Any]:
        run.finish(job.n_rows())
        return {}


# ---- embedding ------------------------------------------------------------------------------------------


@dataclass
class EmbedStep(Step):
    model: str | None = None
    text: str = "instruction"
    backend: str = "auto"  # ONNX fp32 on CPU workers, torch on GPU ones (core/maps/embed.py)
    device: str = "auto"
    model_batch_size: int | None = None
    name = "embed"
    kind = "embed"
    required_columns = ("text",)

    @property
    def uses_gpu(self) -> bool:
        return self.backend in ("torch", "auto") and (self.device == "auto" or self.device.startswith("cuda"))

    def resolve_device(self, cluster_has_gpu: bool) -> None:
        import core.maps.embed as embed

        if self.device == "auto":
            self.device = "cuda" if cluster_has_gpu and self.backend in ("torch", "auto") else embed.pick_device("auto")

    @property
    def model_key(self) -> str:
        import core.maps.embed as embed

        return embed.model_key(self.model, self.backend, self.device)

    def setup(self) -> None:
        import core.maps.embed as embed

        self._embedder = embed.get_embedder(self.model, backend=self.backend, device=self.device,
                                            batch_size=self.model_batch_size)
        if self._embedder.key != self.model_key:  # the vectors would be cached under the wrong key
            raise RuntimeError(f"worker produces {self._embedder.key}, job expects {self.model_key}")

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = [t if t is not None else "" for t in batch.column("text").to_pylist()]
        vectors = self._embedder.encode(texts)
        out = batch.drop_columns(["text"])
        if "content_hash" not in out.column_names:
            out = out.append_column("content_hash", pa.array([hashlib.md5(t.encode()).hexdigest() for t in texts]))
        dims = vectors.shape[1] if vectors.size else 0
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dims)
        return out.append_column("vector", column)

    def begin(self, store: Store, dataset: str, engine: str) -> int:
        import core.maps.embed as embed

        names, ids = embed.dataset_ids(store, dataset)
        params = {"datasets": names, "model": self.model or embed.DEFAULT_MODEL, "text": self.text,
                  "backend": self.backend, "model_key": self.model_key, "sample_ids": None, "engine": engine}
        # core/maps/embed.py's own run start: the run, its item list (sample -> text hash) and its embedding_runs row.
        return embed.start_embed_run(store, names, ids, params, self.model_key, self.text, None).run_id

    def export(self, store: Store, job: Job, rows_per_shard: int) -> dict[str, dict[str, Any]]:
        import core.maps.embed as embed

        # Distinct texts not yet in the vector cache; length-sorted so that batches pad little.
        sql = (f"SELECT * FROM (SELECT i.content_hash, any_value({embed.text_sql(self.text)}) AS text "
               "FROM embedding_items i JOIN samples s ON s.id = i.sample_id WHERE i.run_id = ? AND i.content_hash "
               "NOT IN (SELECT content_hash FROM embedding_vectors WHERE model_key = ?) GROUP BY i.content_hash) "
               "ORDER BY length(text), content_hash")
        shards = export_query(store, job, sql, [job.run_id, self.model_key], rows_per_shard=rows_per_shard)
        counts = store.query_df("SELECT count(*) AS n FROM embedding_items WHERE run_id = ?", [job.run_id])
        job.extra["n_items"] = int(counts.n[0])
        return shards

    def import_shard(self, store: Store, job: Job, table: pa.Table) -> None:
        import core.maps.embed as embed

        if table.num_rows == 0:
            return
        vectors = _matrix(table.column("vector"))
        embed.write_vectors(store, int(job.run_id), self.model_key, table.column("content_hash").to_pylist(), vectors)

    def finish(self, store: Store, job: Job, seconds: float, run: Run) -> dict[str, Any]:
        import core.maps.embed as embed

        run_id, n_items = int(job.run_id), int(job.extra.get("n_items", 0))
        n_cached = n_items - int(store.query_df(  # items whose text this job had to compute
            "SELECT count(*) AS n FROM embedding_items WHERE run_id = ? AND content_hash IN "
            "(SELECT content_hash FROM embedding_vectors WHERE model_key = ? AND run_id = ?)",
            [run_id, self.model_key, run_id]).n[0])
        dims = embed.vector_dims(store, run_id, self.model_key)
        with store.transaction() as con:
            con.execute("UPDATE embedding_runs SET dims = ?, n_items = ?, n_cached = ?, device = ?, precision = ?, "
                        "seconds = coalesce(seconds, 0) + ? WHERE run_id = ?",
                        [dims, n_items, n_cached, self.device, self.model_key.rsplit("|", 1)[1], seconds, run_id])
            run.finish(n_items, con=con)
        return {"model_key": self.model_key, "n_items": n_items, "n_cached": n_cached, "dims": dims}


def _matrix(column: pa.ChunkedArray | pa.Array, dtype: Any = np.float32) -> np.ndarray:
    """A (fixed-size) list column of numbers -> matrix, without per-row Python."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0), dtype=dtype)
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    return flat.reshape(n, -1)


def read_vectors(job: Job) -> Iterator[tuple[list[str], np.ndarray]]:
    """(content hashes, matrix) per result shard: one shard in memory at a time."""
    for _, table in job.read_outputs():
        yield table.column("content_hash").to_pylist(), _matrix(table.column("vector"))


# ---- offline tagging ------------------------------------------------------------------------------------


TAG_SCHEMA = pa.schema([("sample_id", pa.int64()), ("tag", pa.string()), ("value", pa.string()),
                        ("score", pa.float64()), ("status", pa.string()), ("detail", pa.string()),
                        ("method", pa.string())])


@dataclass
class TagStep(Step):
    """Offline Magpie-style tags. `groups` as core.tags.results names them (language, turns, lengths, category)."""

    groups: list[str] = field(default_factory=lambda: ["language", "turns", "lengths", "category"])
    language_mode: str = "high"
    model: str | None = None
    name = "tag"
    kind = "tag"
    required_columns = ("sample_id", "text")

    @property
    def tags(self) -> list[str]:
        from core.tags.vocabulary import expand_groups

        wanted = expand_groups(self.groups)
        others = [t for t in wanted if t not in OFFLINE_TAGS and t != "other_categories"]
        if others:
            raise ValueError(f"{', '.join(others)} are not offline tags; the scale engine tags "
                             f"{', '.join(OFFLINE_TAGS)} (LLM-judge tags go through `assay tag` and its endpoint)")
        return wanted

    @property
    def uses_gpu(self) -> bool:
        return "category" in self.tags

    def taggers(self) -> list[Any]:
        from core.tags.taggers.base import NotComputed
        from core.tags.taggers.offline import LanguageTagger, StructureTagger
        from core.tags.taggers.zeroshot import ZeroShotCategoryTagger

        tags, out = self.tags, []
        if "language" in tags:
            out.append(LanguageTagger(self.language_mode))
        structure = [t for t in tags if t in ("turns", "n_chars", "n_tokens")]
        if structure:
            out.append(StructureTagger(structure))
        if "category" in tags:
            out.append(ZeroShotCategoryTagger(self.model))
        if "other_categories" in tags:
            out.append(NotComputed(["other_categories"], "the zero-shot tagger gives one primary category"))
        return out

    def setup(self) -> None:
        self._taggers = self.taggers()

    def __call__(self, batch: pa.Table) -> pa.Table:
        frame = tagger_frame(batch)
        rows: list[dict[str, Any]] = []
        for tagger in self._taggers:
            rows.extend(tagger.tag(frame))
        return rows_table(rows)

    def begin(self, store: Store, dataset: str, engine: str) -> int:
        from core.tags.taggers.zeroshot import evaluate

        info = store.dataset(dataset)
        taggers, tags = self.taggers(), self.tags
        methods = {t: m for tg in taggers for t, m in tg.methods().items()}
        metrics: dict[str, Any] = {}
        if "category" in tags:  # measured once, on the driver, on the labelled real data in the store
            metrics["category"] = {"method": methods["category"], **evaluate(store, self.model)}
        params = {"backend": "offline", "tags": tags, "groups": list(self.groups), "engine": engine,
                  "language_mode": self.language_mode, "model": self.model}

        def prepare(con: Any, run_id: int) -> None:
            con.execute("INSERT INTO tag_runs (run_id, backend, tags, target, n_target, methods, metrics) "
                        "VALUES (?, 'offline', ?, ?, ?, ?, ?)",
                        [run_id, tags, f"dataset:{dataset}", info.n_samples, json.dumps(methods),
                         json.dumps(metrics, default=float)])

        return store.run("tag", params, dataset_id=info.dataset_id, sample_filter=f"dataset: {dataset}",
                         model=self.model or ("all-MiniLM-L6-v2" if "category" in tags else None),
                         prepare=prepare).run_id

    def export(self, store: Store, job: Job, rows_per_shard: int) -> dict[str, dict[str, Any]]:
        from core.tags.taggers.base import load_samples

        def samples(table: pa.Table) -> pa.Table:  # the same batch fields core/taggers reads
            return frame_to_arrow(load_samples(store, table.column("id").to_pylist()))

        info = store.dataset(str(job.dataset))
        ids = store.query_df("SELECT id FROM samples WHERE dataset_id = ? ORDER BY id", [info.dataset_id])
        return _export_frames(job, ids, rows_per_shard, samples)

    def import_shard(self, store: Store, job: Job, table: pa.Table) -> None:
        from core.tags.results import write_tags

        rows = table.to_pandas()
        with store.transaction() as con:  # re-importing a shard replaces its rows: idempotent
            con.execute("DELETE FROM tags WHERE run_id = ? AND sample_id IN (SELECT unnest(?::BIGINT[]))",
                        [job.run_id, rows["sample_id"].unique().tolist()])
        write_tags(store, int(job.run_id), rows, replace_failed=False)


def _export_frames(job: Job, ids: pd.DataFrame, rows_per_shard: int, build: Any) -> dict[str, dict[str, Any]]:
    from core.scale.shards import shard_name, write_parquet_atomic

    shards: dict[str, dict[str, Any]] = {}
    id_table = pa.table({"id": pa.array(ids["id"].astype("int64"))})
    for start in range(0, id_table.num_rows, rows_per_shard):
        table = build(id_table.slice(start, rows_per_shard))
        name = shard_name(len(shards))
        path = job.folder / "input" / f"{name}.parquet"
        write_parquet_atomic(table, path)
        shards[name] = {"path": str(path), "rows": table.num_rows}
    return shards


def frame_to_arrow(df: pd.DataFrame) -> pa.Table:
    df = df.copy()
    df["meta"] = df["meta"].map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v))
    return pa.Table.from_pandas(df, preserve_index=False)


def tagger_frame(batch: pa.Table) -> pd.DataFrame:
    """An input shard batch -> the DataFrame core/taggers expect (core.tags.taggers.base.load_samples' columns).

    The user's own Parquet needs only sample_id and text; the rest is derived as load_samples would."""
    from core.tags.taggers.base import first_user, last_assistant

    df = pd.DataFrame(batch.to_pydict())  # lists stay lists of dicts, as load_samples gives them
    if "messages" not in df:
        df["messages"] = [[{"role": "user", "content": t or ""}] for t in df["text"]]
    df["messages"] = df["messages"].map(lambda m: list(m) if m is not None else [])
    for col, default in (("meta", None), ("rejected", None), ("dataset", None)):
        if col not in df:
            df[col] = default
    if "instruction" not in df:
        df["instruction"] = [first_user(m, t or "") for m, t in zip(df["messages"], df["text"], strict=True)]
    if "response" not in df:
        df["response"] = df["messages"].map(last_assistant)
    if "user_turns" not in df:
        df["user_turns"] = df["messages"].map(lambda m: sum(1 for t in m if t["role"] == "user"))
    if "n_chars" not in df:
        df["n_chars"] = df["text"].map(lambda t: len(t or ""))
    if "n_tokens" not in df:
        df["n_tokens"] = df["text"].map(lambda t: len((t or "").encode()) // 4)  # rough; ingest counts better
    return df


def rows_table(rows: list[dict[str, Any]]) -> pa.Table:
    from core.tags.results import rows_frame

    df = rows_frame(rows)
    return pa.table({
        "sample_id": pa.array(df["sample_id"].astype("int64")),
        "tag": pa.array(df["tag"].astype(str)),
        "value": pa.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                           for v in df["value"]], pa.string()),
        "score": pa.array([None if v is None or pd.isna(v) else float(v) for v in df["score"]], pa.float64()),
        "status": pa.array(df["status"].astype(str)),
        "detail": pa.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                            for v in df["detail"]], pa.string()),
        "method": pa.array([None if v is None else str(v) for v in df["method"]], pa.string()),
    }, schema=TAG_SCHEMA)


# ---- near-duplicate MinHash signatures ---------------------------------------------------------------------


@dataclass
class MinHashStep(Step):
    """MinHash signatures on the workers; LSH, groups and representatives once on the driver."""

    threshold: float = 0.7
    num_perm: int = 128
    shingle: int = 3
    seed: int = 1
    keep: str = "first"
    name = "dedup"
    kind = "dedup"
    required_columns = ("id", "text")

    def setup(self) -> None:
        from core.dedup.groups import MinHasher

        self._hasher = MinHasher(self.num_perm, self.shingle, self.seed)

    def __call__(self, batch: pa.Table) -> pa.Table:
        sigs = self._hasher.signatures([t or "" for t in batch.column("text").to_pylist()])
        column = pa.FixedSizeListArray.from_arrays(pa.array(sigs.reshape(-1), pa.uint32()), self.num_perm)
        return pa.table({"id": batch.column("id"), "signature": column})

    def begin(self, store: Store, dataset: str, engine: str) -> int:
        info = store.dataset(dataset)
        params = {"method": "near", "datasets": [dataset], "dataset_ids": [info.dataset_id], "keep": self.keep,
                  "threshold": self.threshold, "num_perm": self.num_perm, "shingle": self.shingle, "engine": engine}
        return store.run("dedup", params, dataset_id=info.dataset_id, sample_filter=f"datasets: {dataset}").run_id

    def export(self, store: Store, job: Job, rows_per_shard: int) -> dict[str, dict[str, Any]]:
        from core.dedup.groups import CONTENT_SQL

        info = store.dataset(str(job.dataset))
        sql = f"SELECT s.id, {CONTENT_SQL} AS text FROM samples s WHERE s.dataset_id = ? ORDER BY s.id"
        return export_query(store, job, sql, [info.dataset_id], rows_per_shard=rows_per_shard)

    def finish(self, store: Store, job: Job, seconds: float, run: Run) -> dict[str, Any]:
        import core.dedup.groups as dedup

        batches = ((t.column("id").to_numpy(), _matrix(t.column("signature"), np.uint32))
                   for _, t in job.read_outputs())
        pairs = dedup.signature_pairs(batches, threshold=self.threshold, num_perm=self.num_perm, seed=self.seed)
        members, used = dedup.choose_representatives(store, dedup.groups_from_pairs(pairs), self.keep)
        dedup.write_groups(store, int(job.run_id), members)
        run.finish(job.n_rows())
        n_groups = int(members["group_id"].nunique()) if len(members) else 0
        return {"n_groups": n_groups, "n_in_groups": len(members), "n_to_drop": len(members) - n_groups,
                "keep_used": used}


# ---- reward scoring -------------------------------------------------------------------------------------------


@dataclass
class RewardStep(TagStep):
    """Reward-model scores (`response_quality`, plus `reward:<i>` per model of an ensemble) with
    core/tags/taggers/reward_models.py's RewardModelTagger: models load (and are calibrated on the fixed
    calibration set) once per worker, so each batch's ensemble aggregate is final where it is made."""

    models: list[str] = field(default_factory=list)
    aggregation: str = "min"
    device: str = "auto"
    model_batch_size: int | None = None
    groups: list[str] = field(default_factory=lambda: ["response_quality"])
    name = "reward"

    @property
    def tags(self) -> list[str]:
        return list(self._tagger().tags)

    @property
    def uses_gpu(self) -> bool:
        return self.device == "auto" or self.device.startswith("cuda")

    def resolve_device(self, cluster_has_gpu: bool) -> None:
        from core.tags.taggers.reward_models import pick_device

        if self.device == "auto":
            self.device = "cuda" if cluster_has_gpu else pick_device("auto")

    def _tagger(self) -> Any:
        from core.tags.taggers.reward_models import RewardModelTagger

        return RewardModelTagger(self.models, aggregation=self.aggregation, device=self.device,
                                 batch_size=self.model_batch_size)

    def taggers(self) -> list[Any]:
        return [self._tagger()]

    def setup(self) -> None:
        tagger = self._tagger()
        tagger.prepare(None, [])  # type: ignore[arg-type] - loads the models; the store is not used there
        self._taggers = [tagger]

    def begin(self, store: Store, dataset: str, engine: str) -> int:
        info = store.dataset(dataset)
        tagger = self._tagger()
        params = {"backend": "transformers", "tags": tagger.tags, "engine": engine, "models": self.models,
                  "aggregation": self.aggregation, "device": self.device}

        def prepare(con: Any, run_id: int) -> None:
            con.execute("INSERT INTO tag_runs (run_id, backend, tags, target, n_target, methods, metrics) "
                        "VALUES (?, 'transformers', ?, ?, ?, ?, '{}')",
                        [run_id, tagger.tags, f"dataset:{dataset}", info.n_samples, json.dumps(tagger.methods())])

        return store.run("tag", params, dataset_id=info.dataset_id, model=", ".join(self.models),
                         sample_filter=f"dataset: {dataset}", prepare=prepare).run_id

    def finish(self, store: Store, job: Job, seconds: float, run: Run) -> dict[str, Any]:
        self._tagger().finish(store, int(job.run_id))  # ensemble aggregation over the whole run (no model load)
        run.finish(job.n_rows())
        return {"models": self.models, "device": self.device}


STEPS: dict[str, type[Step]] = {"embed": EmbedStep, "tag": TagStep, "dedup": MinHashStep, "reward": RewardStep}
