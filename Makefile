# Treadle: `make demo` runs the flagship job on a local mesh; `make test` runs every test;
# `make unit` the fast ones (no mesh, Go, deploy tools or client virtualenvs).
# All three set up what they need first (Debian packages, the pinned .venv, editable packages).
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup proto demo test unit lint typecheck up clean

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

# the tests that need no service processes, Go, deploy tools or client virtualenvs (the tinker
# SDKs and tinker-cookbook, tests/fixtures/client_venvs.py): the loop while developing
unit: setup
	$(VENV)/bin/pytest -q -m "not mesh and not e2e and not go and not deploy and not clients" tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
