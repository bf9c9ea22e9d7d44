# The README's commands. `make dev` is the main job; `make test` runs every test.
UV ?= uv
UV_VERSION := 0.13.8

.PHONY: install demo system-deps dev stack up down status test test-unit test-integration lint fmt schemas bench bench-quick

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on CI machines) every service process
# would otherwise recompile scikit-learn, scipy and pandas at import (seconds of CPU each).
install:  ## uv (if missing) and the locked dependencies of every package
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen --all-packages --compile-bytecode

demo: install system-deps  ## the README's first command: the whole lifecycle, live and checked (Ctrl-C stops)
	$(UV) run mlcp demo

system-deps:  ## Java 17+ and Maven (the dev stack's Kafka jars), promtool (the alert rules' tests), docker-compose (the compose file's parser test): apt-get when missing and root
	@if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven; \
	  else \
	    echo "the dev stack needs Java 17+ and Maven (java and mvn on PATH): install them" >&2; \
	    exit 1; \
	  fi; \
	fi
	@# promtool is in Debian's `prometheus` package; its service is not started (no init here,
	@# and policy-rc.d keeps it down in containers). Without it the promtool tests skip, saying so.
	@if ! command -v promtool >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	  else \
	    echo "note: promtool (Debian package prometheus) is missing: the alert-rule tests will skip" >&2; \
	  fi; \
	fi
	@# docker-compose (Debian's, v1.29) parses and resolves docker-compose.yml (`config`) with no
	@# Docker engine: tests/unit/test_compose.py runs it. Without it that one test skips, saying so.
	@if ! command -v docker-compose >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose; \
	  else \
	    echo "note: docker-compose (Debian package docker-compose) is missing: the compose config test will skip" >&2; \
	  fi; \
	fi

dev: install  ## the main job: dev stack + the five services with prefixed logs (Ctrl-C stops)
	$(UV) run mlcp up

stack: install  ## only the dev stack: real Kafka + PostgreSQL on loopback (prints the addresses)
	$(UV) run mlcp dev up

up: dev

down:  ## stop the dev stack
	$(UV) run mlcp dev down

status:
	$(UV) run mlcp dev status

test: install system-deps  ## unit, contract, integration and e2e tests (starts the dev stack if needed)
	$(UV) run pytest

test-unit: install
	$(UV) run pytest -m "unit or contracts"

test-integration: install
	$(UV) run pytest -m "integration or e2e"

lint: install  ## ruff, mypy and the layering contracts (import-linter, [tool.importlinter] in pyproject.toml)
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run lint-imports --no-logo

fmt:
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

schemas:  ## regenerate docs/schemas, docs/asyncapi.yaml and the contract snapshots after an intended change
	$(UV) run python -m mlcp.contracts.schemas --write docs/schemas
	$(UV) run python -m mlcp.runtime.asyncapi --write docs/asyncapi.yaml
	UPDATE_SNAPSHOTS=1 $(UV) run pytest tests/contracts -q

bench: install  ## every benchmark vs its anchor, one table → bench/results/ (starts the dev stack)
	$(UV) run mlcp-dev up
	$(UV) sync --frozen --project bench/anchors  # MLflow + Evidently, outside the services' env
	$(UV) run python bench/run.py

bench-quick: install  ## the same with small sizes (< 5 minutes)
	$(UV) run mlcp-dev up
	$(UV) sync --frozen --project bench/anchors
	$(UV) run python bench/run.py --quick
