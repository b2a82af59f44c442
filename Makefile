# Two commands do everything on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# This machine has a CPU build of torch 2.13.0 on disk; GPU users can set TORCH_SPEC (or install torch first).
TORCH_SPEC ?= torch==2.13.0
PORT   ?= 8501

.PHONY: install browser demo run test lint bench clean-store

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps "embedding-atlas==0.26.0" || echo "no embedding-atlas: the map draws with plotly"
	@# numba compiles umap-learn once and keeps it on disk: done here, the first UMAP map does not wait for it.
	$(PY) -c "from core.maps.project import warm_umap_compilation as w; print(f'UMAP compiled and cached in {w():.0f} s')" \
	  || echo "UMAP not compiled ahead: the first UMAP map compiles it (about a minute)"
	touch $@

install: $(VENV)/.installed

# Debian's Chromium for the real-browser tests (never a downloaded browser build).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "could not install chromium: browser tests will be skipped"

# Load the demo datasets from ../shared/datasets into the default store if it is empty.
demo: install
	$(PY) -m core.cli demo --if-empty

run: demo
	HF_HUB_OFFLINE=1 $(VENV)/bin/streamlit run app.py --server.address localhost --server.port $(PORT)

test: install browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider --durations=15

lint: install
	$(VENV)/bin/ruff check core pages app.py ui.py ui_jobs.py ui_atlas.py tests bench

bench: install
	HF_HUB_OFFLINE=1 $(PY) -m bench.run_all
