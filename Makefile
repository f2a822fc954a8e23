# Shortcuts for cachewarden's scripts; the scripts themselves need no make (scripts/run, scripts/test-all).
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
LISTEN ?= 0.0.0.0:9590
export VENV LISTEN

.PHONY: help deps venv services lint test bench run metric-table

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

deps: ## install every Debian package the test suite needs, and the virtualenv
	scripts/install-deps all

venv: ## install the virtualenv only (no Debian package, no server)
	scripts/install-deps venv

services: deps ## start Redis, MariaDB and PostgreSQL if they are not running (test setup, see README)
	scripts/start-services

lint: venv ## ruff, mypy, hadolint
	$(VENV)/bin/ruff check exporter tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint Dockerfile

test: ## scripts/test-all: install, start the servers, then ruff, mypy and the whole test suite
	scripts/test-all

bench: venv ## run every benchmark under bench/ (each prints measured/target/PASS or FAIL)
	@failed=(); shopt -s nullglob; \
	for b in bench/*.py; do \
		echo "==> $$b"; \
		$(PY) "$$b" || failed+=("$$b"); \
	done; \
	if (( $${#failed[@]} )); then echo "FAILED: $${failed[*]}"; exit 1; fi

run: ## scripts/run: the demo on LISTEN (0.0.0.0:9590): views and an unprivileged FPM pool with OPcache, no database
	scripts/run

metric-table: venv ## rewrite the metric reference table in README.md from the code
	scripts/metric-table --write
