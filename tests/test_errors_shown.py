"""No traceback reaches a user: pages show a sentence (or a log reference for a bug), the command line one line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from streamlit.testing.v1 import AppTest

from core.errors import NotFoundError
from core.ingest.importer import ingest_records
from core.store.database import Store

ROOT = Path(__file__).resolve().parent.parent
SECRET = "/srv/secret/assay/core/dedup/groups.py"  # stands for a server path inside an error message


@pytest.fixture
def page_store(tmp_path: Path, monkeypatch) -> Store:
    store = Store(tmp_path / "errors.duckdb", busy_timeout=5)
    ingest_records(store, [{"text": "one sample"}, {"text": "another sample"}], name="tiny", shape="text")
    monkeypatch.setenv("ASSAY_DB", str(store.path))
    return store


def _everything_shown(at: AppTest) -> str:
    parts = []
    for kind in ("error", "warning", "info", "success", "markdown", "caption", "text", "code", "exception"):
        for element in getattr(at, kind):
            parts.append(str(getattr(element, "value", "")) + str(getattr(element, "message", ""))
                         + "".join(getattr(element, "stack_trace", []) or []))
    return "\n".join(parts)


def test_page_bug_shows_a_reference_and_logs_the_traceback(page_store: Store, monkeypatch) -> None:
    import core.dedup.groups as dedup

    def broken(*_args, **_kwargs):
        raise RuntimeError(f"boom in {SECRET}")

    monkeypatch.setattr(dedup, "dedup_runs", broken)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("assay.pages").addHandler(handler)
    try:
        at = AppTest.from_file(str(ROOT / "pages/6_Duplicates.py"), default_timeout=120).run()
    finally:
        logging.getLogger("assay.pages").removeHandler(handler)
    assert not at.exception  # caught by the page's guard, not Streamlit's exception box
    shown = _everything_shown(at)
    assert "Traceback" not in shown and SECRET not in shown and "RuntimeError" not in shown
    [message] = [e.value for e in at.error]
    assert "bug" in message and "server log" in message
    ref = message.split("reference ")[1].split("\\.")[0].split(".")[0]
    assert len(ref) == 8
    [record] = records
    assert ref in record.getMessage() and record.exc_info and record.exc_info[0] is RuntimeError  # the log has it all


def test_page_user_error_shows_its_sentence(page_store: Store, monkeypatch) -> None:
    import core.dedup.groups as dedup

    def missing(*_args, **_kwargs):
        raise NotFoundError("No duplicate run 7: run a duplicate search first")

    monkeypatch.setattr(dedup, "dedup_runs", missing)
    at = AppTest.from_file(str(ROOT / "pages/6_Duplicates.py"), default_timeout=120).run()
    assert not at.exception
    [message] = [e.value for e in at.error]
    assert message.replace("\\", "") == "No duplicate run 7: run a duplicate search first"
    assert "Traceback" not in _everything_shown(at)


def test_server_config_redacts_errors_outside_a_guard(tmp_path: Path) -> None:
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"  # Streamlit 1.67: no type, message or trace
    # AppTest reads the same config file (cwd); an error raised outside any guard reaches the page redacted.
    script = tmp_path / "unguarded.py"
    script.write_text(f"raise RuntimeError('boom in {SECRET}')\n")
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        at = AppTest.from_file(str(script), default_timeout=60).run()
    finally:
        os.chdir(cwd)
    assert at.exception
    shown = _everything_shown(at)
    assert SECRET not in shown and "RuntimeError" not in shown and 'File "' not in shown
    # the test server starts `streamlit run` in the project folder without overriding it: same config
    support = (ROOT / "tests" / "browser_support.py").read_text()
    assert "cwd=ROOT" in support and "showErrorDetails" not in support


def _cli(code_or_args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ASSAY_DB": str(tmp_path / "cli.duckdb"), "TMPDIR": str(tmp_path)}
    return subprocess.run([sys.executable, *code_or_args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_cli_user_error_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n')
    result = _cli(["-m", "core.cli.main", "ingest", str(bad), "--name", "broken"], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("assay: error:") and "broken.jsonl" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_bug_is_one_line_naming_the_log(tmp_path: Path) -> None:
    code = ("import sys, core.cli.main, core.store.database\n"
            "def broken(self):\n"
            f"    raise RuntimeError('boom in {SECRET}')\n"
            "core.store.database.Store.datasets = broken\n"
            "sys.exit(core.cli.main.main(['datasets']))\n")
    result = _cli(["-c", code], tmp_path)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("assay: error: internal error"), result.stderr
    assert "Traceback" not in result.stderr
    log = tmp_path / "assay-errors.log"
    assert str(log) in lines[0] and "Traceback" in log.read_text() and "broken" in log.read_text()
