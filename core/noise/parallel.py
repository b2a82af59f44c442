"""Both cores for the noise methods, without oversubscription.

Why more threads per method made them slower: the heads train on minibatches (256 x 384 embeddings),
so each torch op lasts well under a millisecond, and under OpenMP every op is a fork-join region whose
closing barrier waits for every thread of the team. This process holds several pools, each sized to
the core count by default (threadpoolctl.threadpool_info() lists them): torch's OpenMP (libgomp, which
MKL inside torch shares), an OpenBLAS for numpy and another for scipy (pthreads), and scikit-learn's own
libgomp. On a 2-core machine where anything else runs (another pool, another process), one thread of a
team is often descheduled, and each of thousands of tiny ops then waits a scheduler slice at its
barrier: measured here, 8 epochs of the rescaler on 1,400 samples took 163 s with torch at 2 threads
and 27.5 s at 1 (load average ~12 from other jobs).

What works is coarse-grained parallelism: the methods (and AUM's two passes) are independent jobs, so
up to `workers` of them run at once in separate processes, each with every pool at one thread
(torch.set_num_threads(1) and threadpoolctl's limit on all BLAS and OpenMP pools). There is no barrier
between jobs, so a descheduled process delays only its own job, and the pools never exceed one thread
per worker. Processes (spawned), not threads: dropout draws from torch's global random generator, so
jobs sharing one process would make a run irreproducible; each process seeds its own, and the results
are the same as running the jobs one after another.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_mod
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

Progress = Callable[[float, str], None]
Job = tuple[Callable[..., Any], tuple, dict[str, Any]]  # function (takes progress=), args, kwargs

_QUEUE: Any = None
_POOL: tuple[int, ProcessPoolExecutor, Any] | None = None  # (workers, pool, progress queue), kept between runs


def resolve_workers(threads: int) -> int:
    """`threads` from the run's config: 0 means one worker per core."""
    return max(1, threads if threads > 0 else (os.cpu_count() or 1))


def single_threaded() -> None:
    """Every pool of this process at one thread, for good (worker processes only)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


# Read by OpenBLAS, MKL and libgomp when they load: a worker's pools start at one thread. threadpoolctl
# alone is not enough, as it only limits the libraries loaded when it is called: scipy's OpenBLAS and
# scikit-learn's libgomp, loaded later, kept one thread per core, and two workers each running two
# spinning BLAS threads on two cores made cleanlab 30x and the rescaler 7x slower (measured).
_ONE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _init_worker(queue: Any) -> None:
    global _QUEUE
    _QUEUE = queue
    os.environ.update({name: "1" for name in _ONE_THREAD_ENV})  # this worker process only
    _warm_up()
    single_threaded()  # after the imports, so that it reaches every pool they loaded


def _warm_up() -> None:
    """Pay the one-off costs before the first job: the methods' imports, and torch.optim's first use,
    which imports torch._dynamo (measured 21 s on the busy 2-core machine, 0.1 s on later uses)."""
    import torch

    import core.noise.run  # noqa: F401 - the methods and their libraries (cleanlab, scikit-learn)

    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])


def pool(workers: int) -> tuple[ProcessPoolExecutor, Any]:
    """The worker pool for `workers` (started now, warming up in the background; kept for later runs)."""
    global _POOL
    if _POOL is not None and _POOL[0] == workers and not getattr(_POOL[1], "_broken", False):
        return _POOL[1], _POOL[2]
    if _POOL is not None:
        _POOL[1].shutdown(wait=False, cancel_futures=True)
    ctx = mp.get_context("spawn")  # fork after torch's OpenMP has started can hang the child
    queue = ctx.Queue()
    executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(queue,))
    for _ in range(workers):  # start every worker now: they warm up while the caller loads its data
        executor.submit(int)
    _POOL = (workers, executor, queue)
    return executor, queue


def _timed(fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any], report: Progress | None) -> tuple[Any, float]:
    t0 = time.monotonic()
    return fn(*args, progress=report, **kwargs), round(time.monotonic() - t0, 2)


def _call(name: str, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> tuple[Any, float]:
    from threadpoolctl import threadpool_limits

    report = (lambda f, msg: _QUEUE.put((name, float(f), str(msg)))) if _QUEUE is not None else None
    with threadpool_limits(1):  # any pool a job's own imports loaded since the worker started
        return _timed(fn, args, kwargs, report)


def _drain(queue: Any, progress: dict[str, Progress | None]) -> None:
    while True:
        try:
            name, f, msg = queue.get_nowait()
        except queue_mod.Empty:
            return
        if progress.get(name):
            progress[name](f, msg)


def run_jobs(jobs: dict[str, Job], workers: int,
             progress: dict[str, Progress | None] | None = None) -> dict[str, tuple[Any, float]]:
    """Run independent jobs, up to `workers` at once, each single-threaded in a worker process;
    (result, seconds) by job name.

    Jobs are started in the order given (put the longest first). With one worker they run here, one
    after another, under dynamics.limit_threads(1). Progress callbacks run in this process.
    """
    from core.noise.dynamics import limit_threads

    progress = progress or {}
    if workers <= 1 or len(jobs) <= 1:
        with limit_threads(1):
            return {name: _timed(fn, args, kw, progress.get(name)) for name, (fn, args, kw) in jobs.items()}
    executor, queue = pool(workers)
    _drain(queue, {})  # anything a cancelled earlier run left behind
    futures = {executor.submit(_call, name, fn, args, kw): name for name, (fn, args, kw) in jobs.items()}
    try:
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            _drain(queue, progress)
            for fut in done:
                fut.result()  # raise a job's error now, not after the others finish
        _drain(queue, progress)
        return {name: fut.result() for fut, name in futures.items()}
    finally:
        for fut in futures:
            fut.cancel()
