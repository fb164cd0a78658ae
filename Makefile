# The front door. `make run` and `make test` are all a fresh clone needs (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PACKAGES := shared services/customer-api services/segmentation-worker services/followup-scheduler services/survey-service
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES))

.PHONY: help install run test test-unit test-integration test-e2e infra infra-stop up down lint format bench catalogue clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort

$(STAMP): $(PYPROJECTS) requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Retention needs Python 3.11 or newer")'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(foreach p,$(PACKAGES),-e $(p)) -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)  ## Create .venv and install every package

run: $(STAMP)  ## Start the whole platform in one process (SQLite under ./var, in-process bus)
	$(BIN)/retention run all

infra:  ## Start (or reuse) the local PostgreSQL and Kafka; install Chromium for the browser tests
	bash deploy/postgres/postgres.sh start
	bash deploy/kafka/kafka.sh start
	bash deploy/browser/chromium.sh

infra-stop:  ## Stop the local Kafka and PostgreSQL
	bash deploy/kafka/kafka.sh stop
	bash deploy/postgres/postgres.sh stop

test: $(STAMP) infra  ## The whole suite: unit, integration and end-to-end, against real PostgreSQL and Kafka
	RETENTION_REQUIRE_INFRA=1 $(BIN)/pytest

test-unit: $(STAMP)  ## Unit tests only (no infrastructure needed)
	$(BIN)/pytest -m "not integration and not e2e"

test-integration: $(STAMP) infra
	RETENTION_REQUIRE_INFRA=1 $(BIN)/pytest -m integration

test-e2e: $(STAMP) infra
	RETENTION_REQUIRE_INFRA=1 $(BIN)/pytest -m e2e

up: $(STAMP) infra  ## Distributed mode on this machine: every API and consumer as its own process
	bash deploy/local/up.sh

down:  ## Stop what `make up` started (PostgreSQL and Kafka keep running; see infra-stop)
	bash deploy/local/down.sh

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared/src services/*/src

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP) infra  ## Run the benchmarks and write docs/benchmarks.md
	$(BIN)/python -m bench

catalogue: $(STAMP)  ## Regenerate the event catalogue (JSON Schemas and AsyncAPI) in docs/events
	$(BIN)/retention catalogue --out docs/events

clean:  ## Remove the virtualenv and local data
	rm -rf $(VENV) var
