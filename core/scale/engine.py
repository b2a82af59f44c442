"""Run a step over a dataset's shards, in this process ("local") or on Ray ("ray"), resumable by shard.

Both engines call the same `compute_shard` on the same step object: read an input shard, call the step on
batches of `batch_size` rows, write the result shard atomically, record the computation. They differ only
in who calls it. With Ray, a Ray Data pipeline over the pending shard names runs `ShardWorker` actors
(`map_batches` with an actor pool of `num_workers`; each actor loads the model once in `setup()`, and gets
`num_gpus=1` when the cluster has GPUs and the step uses one). Result shards are written by the workers to
the job folder (shared storage on a real cluster), and the driver imports each finished shard into the
store in short transactions as soon as its name comes back, so a killed job loses at most the shards in
flight, and the next call with the same job folder skips every shard already computed or imported.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from core.scale.shards import DEFAULT_ROWS_PER_SHARD, Job, user_shards, write_parquet_atomic
from core.scale.steps import Step
from core.store.database import Store
from core.store.runs import Run

ENGINES = ("local", "ray")
DEFAULT_BATCH_SIZE = 1024
CORE_DIR = Path(__file__).resolve().parent.parent
Progress = Callable[[int, int], None]


@dataclass
class ScaleReport:
    run_id: int
    step: str
    engine: str
    job_dir: str
    n_shards: int
    n_rows: int
    shards_computed: int        # by this call
    shards_skipped: int         # already computed by an earlier (interrupted) call
    seconds: float
    rows_per_second: float | None
    workers: int
    gpus_per_worker: float
    attempt: str = ""             # the id this call's computations are recorded under (job.computations())
    result: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# ---- one shard: the only place a step is applied ---------------------------------------------------------


def compute_shard(step: Step, job: Job, name: str, *, batch_size: int, attempt: str, engine: str) -> int:
    """Apply `step` to one input shard, batch by batch; write its result shard; return its row count."""
    t0 = time.monotonic()
    source = pq.ParquetFile(job.input_path(name))
    parts = [step(pa.Table.from_batches([b])) for b in source.iter_batches(batch_size=batch_size)]
    table = pa.concat_tables(parts) if parts else step(source.schema_arrow.empty_table())
    write_parquet_atomic(table, job.output_path(name))
    rows = source.metadata.num_rows
    job.record_computed(name, attempt, rows=rows, seconds=time.monotonic() - t0, engine=engine)
    return rows


class ShardWorker:
    """A Ray Data actor: one step (one model) per actor, one shard per call."""

    def __init__(self, step: Step, job_dir: str, batch_size: int, attempt: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.step, self.job = step, Job.load(job_dir)
        self.batch_size, self.attempt = batch_size, attempt
        self.step.setup()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        names = [str(n) for n in batch["shard"]]
        rows = [compute_shard(self.step, self.job, n, batch_size=self.batch_size, attempt=self.attempt,  # type: ignore[arg-type]
                              engine="ray") for n in names]
        return {"shard": names, "rows": rows}


# ---- Ray ----------------------------------------------------------------------------------------------


def init_ray(address: str | None = None, *, num_cpus: int | None = None,
             object_store_memory: int | None = None) -> None:
    """Join a cluster (`address`, e.g. "ray://head:10001" or "auto") or start a local Ray on this machine.

    No dashboard, no usage reporting, no network beyond the cluster. The project's `core` package travels
    to remote workers as a py_module; local workers find it on PYTHONPATH."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return
    env_vars = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0"}
    if address:
        ray.init(address=address, log_to_driver=False,
                 runtime_env={"env_vars": env_vars, "py_modules": [str(CORE_DIR)]})
    else:
        env_vars["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CORE_DIR.parent), os.environ.get("PYTHONPATH")]))
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 object_store_memory=object_store_memory, runtime_env={"env_vars": env_vars})
    _quiet_ray_data()


def _quiet_ray_data() -> None:
    import logging

    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def _ray_compute(step: Step, job: Job, pending: list[str], *, num_workers: int, batch_size: int, gpus: float,
                 attempt: str, on_done: Callable[[str], None]) -> None:
    import ray.data

    _quiet_ray_data()
    items = ray.data.from_items([{"shard": n} for n in pending], override_num_blocks=len(pending))
    results = items.map_batches(
        ShardWorker, fn_constructor_kwargs={"step": step, "job_dir": str(job.folder), "batch_size": batch_size,
                                            "attempt": attempt},
        batch_size=1, compute=ray.data.ActorPoolStrategy(size=num_workers), num_cpus=1, num_gpus=gpus)
    for row in results.iter_rows():  # streaming: a shard's name arrives as soon as its result is written
        on_done(str(row["shard"]))


# ---- the job ------------------------------------------------------------------------------------------


def default_job_dir(store: Store, step: Step, dataset: str | None) -> Path:
    """<store folder>/jobs/<step>-d<dataset id>-<config hash> (or <step>-parquet-<hash>); a finished job there
    gets a numbered sibling. Named from the id, never the dataset's name: a name is user text ("../x", 10,000
    characters) and must not become a path."""
    digest = hashlib.sha1(json.dumps([step.name, dataset, step.config()], sort_keys=True, default=str).encode())
    which = f"d{store.dataset(dataset).dataset_id}" if dataset is not None else "parquet"
    base = store.path.parent / "jobs" / f"{step.name}-{which}-{digest.hexdigest()[:10]}"
    folder, n = base, 1
    while (job := Job.load(folder)) is not None and job.status == "finished":
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def _open_job(store: Store, step: Step, dataset: str | None, folder: Path, engine: str, source: Any,
              rows_per_shard: int) -> tuple[Job, bool]:
    job = Job.load(folder)
    if job is not None and job.shards is not None:
        if job.step != step.name or job.config != step.config() or job.dataset != dataset:
            raise ValueError(f"{folder} holds a different job ({job.step} on {job.dataset}); choose another --job-dir")
        if job.status == "finished":
            raise ValueError(f"the job in {folder} has finished (run {job.run_id}); choose another --job-dir")
        return job, True  # the same run goes on (run_step attaches to it)
    run_id = job.run_id if job is not None and job.config == step.config() else None
    job = Job(folder=folder, step=step.name, config=step.config(), dataset=dataset, run_id=run_id)
    if source is None:
        if job.run_id is None:
            job.run_id = step.begin(store, str(dataset), engine)
            job.save()  # the run id first: an export interrupted now re-exports into the same run
        job.shards = step.export(store, job, rows_per_shard)
    else:
        job.run_id = store.run(f"scale-{step.name}", {"step": step.name, "config": step.config(),
                                                      "source": str(source), "engine": engine,
                                                      "output": str(folder / "output")},
                               sample_filter=f"parquet: {source}").run_id
        job.shards = user_shards(source, step.required_columns)
    job.status = "running"
    job.save()
    return job, False


def run_step(
    step: Step,
    store: Store,
    dataset: str | None = None,
    *,
    engine: str = "local",
    ray_address: str | None = None,
    num_workers: int = 2,
    batch_size: int = DEFAULT_BATCH_SIZE,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    job_dir: str | Path | None = None,
    source: Any = None,
    gpus_per_worker: float | None = None,
    progress: Progress | None = None,
) -> ScaleReport:
    """Run `step` over `dataset` (or the user's Parquet `source`): export shards, compute the pending ones
    with the chosen engine, import results into the store shard by shard, finish the recorded run.

    Calling it again with the same `job_dir` after an interruption resumes: finished shards are skipped.
    With `source`, results stay as Parquet in the job folder's output/ (nothing to import into the store)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    if (dataset is None) == (source is None):
        raise ValueError("name a dataset or a Parquet source, not both")
    t0 = time.monotonic()
    gpus = 0.0
    if engine == "ray":
        init_ray(ray_address, num_cpus=None if ray_address else os.cpu_count())
        gpus = gpus_per_worker if gpus_per_worker is not None else (1.0 if step.uses_gpu and cluster_gpus() >= 1 else 0.0)
    step.resolve_device(gpus > 0)
    folder = Path(job_dir) if job_dir else default_job_dir(store, step, dataset)
    job, _ = _open_job(store, step, dataset, folder, engine, source, rows_per_shard)
    pending = job.pending()
    attempt = uuid.uuid4().hex[:12]
    total, done = job.n_rows(), job.n_rows(set(job.names()) - set(pending))

    def on_done(name: str) -> None:
        nonlocal done
        if source is None and not job.is_imported(name):
            step.import_shard(store, job, pq.read_table(job.output_path(name)))
            job.mark_imported(name)
        done += job.n_rows([name])
        if progress:
            progress(done, total)

    with store.attach_run(int(job.run_id)) as run:  # failure or cancel recorded on the run
        for name in job.names():  # computed by an interrupted call but never imported
            if job.is_computed(name) and not job.is_imported(name) and source is None:
                step.import_shard(store, job, pq.read_table(job.output_path(name)))
                job.mark_imported(name)
        if progress:
            progress(done, total)
        if pending and engine == "local":
            step.setup()
            for name in pending:
                compute_shard(step, job, name, batch_size=batch_size, attempt=attempt, engine="local")
                on_done(name)
        elif pending:
            _ray_compute(step, job, pending, num_workers=num_workers, batch_size=batch_size, gpus=gpus,
                         attempt=attempt, on_done=on_done)
        missing = job.pending()
        if missing:
            raise RuntimeError(f"{len(missing)} shards were not computed: {', '.join(missing[:5])}")
        seconds = time.monotonic() - t0
        result = step.finish(store, job, seconds, run) if source is None else _finish_external(job, run)
    job.status = "finished"
    job.save()
    computed_rows = job.n_rows(pending)
    return ScaleReport(run_id=int(job.run_id), step=step.name, engine=engine, job_dir=str(job.folder),
                       n_shards=len(job.names()), n_rows=total, shards_computed=len(pending),
                       shards_skipped=len(job.names()) - len(pending), seconds=seconds,
                       rows_per_second=computed_rows / seconds if computed_rows and seconds else None,
                       workers=1 if engine == "local" else num_workers, gpus_per_worker=gpus, attempt=attempt,
                       result=result)


def _finish_external(job: Job, run: Run) -> dict[str, Any]:
    run.finish(job.n_rows())
    return {"output": str(job.folder / "output")}
