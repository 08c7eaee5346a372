# Platoscope: `make run` starts the app, `make test` runs the whole suite.
# Both create a local virtual environment (.venv) on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test test-fast bench demo-data clean-cache clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev,distributed]'
	@touch $(STAMP)

run: install
	$(VENV)/bin/streamlit run app.py --server.port 8501

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not browser and not slow"

bench: install
	@for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

demo-data: install
	$(PY) -m core.demo.build

clean-cache:
	find cache -mindepth 1 ! -name .gitkeep -exec rm -rf {} +

clean: clean-cache
	rm -rf $(VENV) *.egg-info
