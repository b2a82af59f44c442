"""Helpers shared by the benchmark scripts: where the data is, peak memory, writing results."""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def shared_dir() -> Path:
    from core.ingest.demo import shared_datasets_dir

    folder = shared_datasets_dir()
    if not folder.is_dir():
        sys.exit(f"benchmark needs the real datasets in {folder}")
    return folder


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux's VmHWM, the high-water mark of this process's own memory. Not ru_maxrss: Linux carries the
    parent's resident size into a child's ru_maxrss across fork+exec, so a child started by a parent that
    held 4.7 GB reported 4.7 GB whatever it used itself (it used 1.2 GB; found in the mixture benchmark)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_isolated(module: str, *args: str) -> dict[str, Any]:
    """Run `python -m module args` in a fresh process (so peak memory is its own); it prints one JSON line."""
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {"machine": {"cpus": _cpus(), "python": platform.python_version()}, **results}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    return path


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
