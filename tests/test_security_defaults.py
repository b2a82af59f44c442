"""Security defaults of the served workbench: localhost only, XSRF protection, bounded uploads."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_streamlit_config_is_locked_down() -> None:
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    server = config["server"]
    assert server["address"] == "localhost"
    assert server["enableXsrfProtection"] is True
    assert 0 < server["maxUploadSize"] <= 500  # MB
    assert config["browser"]["gatherUsageStats"] is False  # no calls home from an offline machine


def test_make_run_binds_to_localhost() -> None:
    makefile = (ROOT / "Makefile").read_text()
    run_line = next(line for line in makefile.splitlines() if "streamlit run app.py" in line)
    assert "--server.address localhost" in run_line
