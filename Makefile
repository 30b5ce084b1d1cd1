# One entry point for everything. On a fresh machine each target sets up what it needs (venv, pip, npm) itself.
#   make synth   synthesize every stack offline and print a summary
#   make test    run every test (the command CI runs through .ci/run)
#   make check   lint + types + tests
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PYTHONDONTWRITEBYTECODE := 1

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

.PHONY: help deps synth test lint check docs clean
help:
	@grep -E '^#   make' $(MAKEFILE_LIST) | sed 's/^#   //'

deps: $(DEPS)

# Offline: no credentials, no lookups (AZs are explicit in cdk.json). CONTEXT="-c env=prod" picks another env.
synth: $(VENV)/.stamp-cdk node_modules/.stamp
	env -u AWS_PROFILE -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
		npx cdk synth --no-lookups --quiet $(CONTEXT)
	$(BIN)/python tools/synth_summary.py cdk.out

test: $(DEPS)
	$(BIN)/pytest

lint: $(VENV)/.stamp-cdk
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

check: lint test

# The key tables of docs/configuration.md come from the config models (tests/config/test_docs.py checks them).
docs: $(VENV)/.stamp-cdk
	$(BIN)/python -m config.docs

clean:
	rm -rf cdk.out .pytest_cache .ruff_cache
