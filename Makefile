# dltmw — every target sets up what it needs (virtualenv, dependencies) by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
PROTO_FILES := $(wildcard protos/dltmw/v1/*.proto)

.PHONY: venv demo test soak unit integration lint protos protos-check bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,bench]'
	@rm -f $(VENV)/.installed-*
	@touch $@

## demo: the main job — a capital-market network as real processes doing real work
demo: $(STAMP)
	$(VENV)/bin/dltmw demo

## test: lint, then every test tier
test: lint
	$(PY) -m pytest -q -p no:cacheprovider tests

## soak: the long tier — tests marked `soak` with their soak counts; writes soak-summary.md
soak: $(STAMP)
	rm -f soak-report.jsonl
	DLTMW_TIER=soak DLTMW_SOAK_REPORT=$(CURDIR)/soak-report.jsonl \
		$(PY) -m pytest -q -p no:cacheprovider -m soak --timeout 7200 tests
	$(PY) scripts/soak_summary.py soak-report.jsonl | tee soak-summary.md

unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/integration

lint: $(STAMP) protos-check
	$(VENV)/bin/ruff check dltmw tests benchmarks scripts
	$(VENV)/bin/ruff format --check dltmw tests benchmarks scripts
	$(VENV)/bin/mypy
	cd protos && ../$(VENV)/bin/buf lint

## protos: regenerate the committed Python stubs (+ .pyi) from protos/
protos: $(STAMP)
	$(PY) scripts/gen_protos.py dltmw/v1

## protos-check: fail when the committed stubs differ from what protos/ generates
protos-check: $(STAMP)
	$(PY) scripts/gen_protos.py --check dltmw/v1

## bench: the default benchmark (two orgs, AND policy, mTLS, sqlite FULL); appends to benchmarks/RESULTS.md
bench: $(STAMP)
	$(VENV)/bin/dltmw bench

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache
