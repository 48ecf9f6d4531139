# Two commands on a fresh machine with Python 3.11+:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= example/order-processing-pipeline.yaml

.PHONY: run token test lint validate bench clean

# The virtual environment is rebuilt whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# --dev: without JWT_SECRET, admin tokens are signed with a random secret kept in data/dev-jwt-secret (mode 0600,
# ignored by git); the server prints a ready admin token at start.
run: $(VENV)/.installed
	$(BIN)/workflow-server -config $(CONFIG) --dev

# A fresh development admin token (`export TOKEN=$$(make -s token)`), signed like the ones `make run` prints.
token: $(VENV)/.installed
	@$(BIN)/workflow-server token --dev --sub dev --role admin

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The static checks CI runs before the tests: lint and format, types, and the layout's import rules.
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

validate: $(VENV)/.installed
	$(BIN)/workflow-server validate $(CONFIG)

bench: $(VENV)/.installed
	$(BIN)/python tests/bench/bench_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
