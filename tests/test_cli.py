"""The command line as a user meets it: fast to start, every command listed, errors on one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _assay(*args: str, db: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ASSAY_DB": str(db)}
    return subprocess.run([sys.executable, "-m", "core.cli.main", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_help_lists_every_command_without_loading_models() -> None:
    code = ("import sys, core.cli.main; core.cli.main.build_parser(); "
            "print(sorted(m for m in ('torch', 'sentence_transformers', 'ray', 'cleanlab') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # `assay --help` stays quick: heavy libraries load only when used
    help_text = subprocess.run([sys.executable, "-m", "core.cli.main", "--help"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout
    for command in ("ingest", "datasets", "show", "embed", "map", "tag", "noise", "dedup", "contamination", "mix",
                    "scale"):
        assert f"    {command} " in help_text or f"    {command}\n" in help_text, command


def test_assay_db_env_and_json_errors(tmp_path: Path) -> None:
    db = tmp_path / "env.duckdb"
    result = _assay("datasets", "--json", db=db)
    assert result.returncode == 0 and json.loads(result.stdout) == []
    assert db.exists()  # ASSAY_DB picked the store
    missing = _assay("show", "nope", "--json", db=db)
    assert missing.returncode == 2
    assert json.loads(missing.stdout)["error"] == "KeyError" and "nope" in missing.stdout
