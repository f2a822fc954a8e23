# cachewarden's entry points. `make test` and `make run` set up everything they need on Debian 12
# (packages, virtualenv, servers) and are safe to re-run.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
LISTEN ?= 0.0.0.0:9590
DEMO_CONFIG := var/demo/cachewarden.yaml

.PHONY: help deps services lint test bench run metric-table

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

deps: ## install missing Debian packages and the virtualenv
	scripts/install-deps

services: deps ## start Redis, MariaDB and PostgreSQL if they are not running
	scripts/start-services

lint: deps ## ruff, mypy, hadolint
	$(VENV)/bin/ruff check exporter tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile

test: deps services ## ruff, mypy and the whole test suite (unit + integration)
	scripts/test

bench: deps ## run every benchmark under bench/ (each prints measured/target/PASS or FAIL)
	@failed=(); shopt -s nullglob; \
	for b in bench/*.py; do \
		echo "==> $$b"; \
		$(PY) "$$b" || failed+=("$$b"); \
	done; \
	if (( $${#failed[@]} )); then echo "FAILED: $${failed[*]}"; exit 1; fi

run: deps services ## build the demo Laravel app into var/demo and serve it on :9590
	scripts/demo-setup
	exec $(VENV)/bin/cachewarden serve --config.file $(DEMO_CONFIG) --web.listen-address $(LISTEN)

metric-table: deps ## rewrite the metric reference table in README.md from the code
	scripts/metric-table --write
