# Treadle: `make demo` runs the flagship job on a local mesh; `make test` runs every test.
# Both set up what they need first (Debian packages, the pinned .venv, editable packages).
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup proto demo test lint typecheck up clean

setup:
	@scripts/setup.sh

proto: setup
	@scripts/proto.sh

demo: setup
	$(PY) scripts/demo.py

up: setup
	$(VENV)/bin/treadle up

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

test: setup lint typecheck
	$(VENV)/bin/pytest -q tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
