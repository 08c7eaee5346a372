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

# MALLOC_ARENA_MAX=2: glibc keeps freed memory per arena, and every script run is a new thread (README, "Cache")
run: install
	MALLOC_ARENA_MAX=2 $(VENV)/bin/streamlit run app.py --server.port 8501

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not browser and not slow"

# Each benchmark's output goes to bench/results/<name>.txt (committed: the README's benchmark table cites them).
# BENCH_ARGS=--quick for the short versions; BENCH=bench/bench_cka.py for one script.
BENCH ?= $(wildcard bench/bench_*.py)
BENCH_ARGS ?=

bench: install
	@mkdir -p bench/results
	@for f in $(BENCH); do name=$$(basename $$f .py); \
		echo "== $$f $(BENCH_ARGS)"; \
		{ echo "# $$f $(BENCH_ARGS)"; echo "# $$(date -u +%Y-%m-%dT%H:%MZ) $$(uname -m), $$(nproc) CPUs, load $$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"; \
		  $(PY) $$f $(BENCH_ARGS); } > bench/results/$$name.txt 2>&1 || { cat bench/results/$$name.txt; exit 1; }; \
		cat bench/results/$$name.txt; done

demo-data: install
	$(PY) -m core.demo.build

clean-cache:
	find cache -mindepth 1 ! -name .gitkeep -exec rm -rf {} +

clean: clean-cache
	rm -rf $(VENV) *.egg-info
