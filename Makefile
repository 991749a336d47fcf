# bridge_xr: two commands on a fresh clone.
#   make demo   create .venv, install bridge_xr with all extras, run `bridge demo --out demo-out`
#   make test   same setup, then ruff, mypy, the schema drift check and the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: demo test setup lint typecheck schemas bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, from the local CPU build: nnU-Net must never pull a multi-GB CUDA build
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[all,learn]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bridge demo --out demo-out

lint: $(STAMP)
	$(VENV)/bin/ruff check bridge_xr cli tests benchmarks
	$(VENV)/bin/ruff format --check bridge_xr cli tests benchmarks
	$(VENV)/bin/ruff check --show-settings bridge_xr/__init__.py > /dev/null
	# the layers import one way (pyproject.toml [tool.importlinter])
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

schemas: $(STAMP)
	$(PY) -c "from bridge_xr.model.metadata import _main; _main(['schemas'])"

test: $(STAMP) lint typecheck
	$(VENV)/bin/pytest -q --durations=10

bench: $(STAMP)
	$(PY) -m benchmarks --size-gib 2

clean:
	rm -rf $(VENV) demo-out bench-out .pytest_cache .mypy_cache .ruff_cache
