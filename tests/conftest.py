"""Shared fixtures: a fresh store file per test, the shared real datasets, a live workbench server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.store.database import Store

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ASSAY_SHARED_DATASETS", ROOT.parent / "shared" / "datasets"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
