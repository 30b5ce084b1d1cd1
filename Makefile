# One entry point for everything. On a fresh machine each target sets up what it needs (venv, pip, npm) itself.
# `make` (or `make help`) lists the targets: the `## ...` text after each one.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PYTHONDONTWRITEBYTECODE := 1

# Packages mypy checks (pydantic plugin; settings in pyproject.toml). Add a package here once it is clean.
MYPY_PACKAGES := config charts stacks model_server chat_ui

# Stamps: a dependency set is reinstalled only when its requirement file changes.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.stamp-cdk: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt -r requirements-dev.txt
	touch $@

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Everything `make test` needs. Fragments in mk/ append their own stamps to DEPS.
DEPS := $(VENV)/.stamp-cdk node_modules/.stamp
-include mk/*.mk

.PHONY: help deps synth test lint types check docs clean
help:  ## list these targets
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-zA-Z_-]+:[^#]*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: $(DEPS)  ## install everything the tests need (venv, npm, llama.cpp wheel, checkov)

# Offline: no credentials, no lookups (AZs are explicit in cdk.json). CONTEXT="-c env=prod" picks another env.
synth: $(VENV)/.stamp-cdk node_modules/.stamp  ## synthesize every stack offline and print a summary (CONTEXT="-c ...")
	env -u AWS_PROFILE -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
		npx cdk synth --no-lookups --quiet $(CONTEXT)
	$(BIN)/python tools/synth_summary.py cdk.out

test: $(DEPS)  ## run every test
	$(BIN)/pytest

lint: $(VENV)/.stamp-cdk  ## ruff: lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(DEPS)  ## mypy on config, charts, stacks, model_server, chat_ui (MYPY_PACKAGES)
	$(BIN)/mypy $(MYPY_PACKAGES)

check: lint types test  ## lint + types + every test: what CI runs (.ci/run)

# The key tables of docs/configuration.md come from the config models (tests/config/test_docs.py checks them).
docs: $(VENV)/.stamp-cdk  ## regenerate docs/configuration.md's key tables from config/
	$(BIN)/python -m config.docs

clean:  ## remove cdk.out and tool caches
	rm -rf cdk.out .pytest_cache .ruff_cache .mypy_cache
