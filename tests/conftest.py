"""Shared fixtures: a fresh store file per test, the shared real datasets, a live workbench server."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from core.store.database import Store

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ASSAY_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def onnx_exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of ONNX exports for the whole session (child processes inherit it): each test's store
    is in a folder of its own, and exporting beside each one would re-export the model per test."""
    folder = Path(os.environ.setdefault("ASSAY_ONNX_DIR", str(tmp_path_factory.mktemp("onnx-exports"))))
    return folder


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A real DuckDB store file in a temporary folder."""
    return Store(tmp_path / "test.duckdb", busy_timeout=5)


@pytest.fixture(scope="session")
def shared() -> Path:
    """The real public datasets in ../shared/datasets; tests that need them skip where it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"real datasets folder {SHARED} is absent (set ASSAY_SHARED_DATASETS to point at it)")
    return SHARED


# The browser fixtures (workbench, chromium_browser, browser_page) live in one plugin so that the
# session-scoped browser is started once; importing them into each test module would start one per module.
pytest_plugins = ("tests.browser_support",)


def pytest_terminal_summary(terminalreporter) -> None:
    """Name the threads still alive at the end: a background thread inside native code when the interpreter
    finalises can abort the process after a green run (core/store/jobs.py, _stop_at_exit). The stores'
    idle-close timers are left out: they only close a store, which the atexit handler does anyway."""
    alive = [f"{t.name}{' (daemon)' if t.daemon else ''}" for t in threading.enumerate()
             if t is not threading.main_thread() and t.is_alive() and not isinstance(t, threading.Timer)]
    if alive:
        terminalreporter.write_line(f"threads alive at the end of the session: {', '.join(sorted(alive))}")
