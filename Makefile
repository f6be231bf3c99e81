# dltmw — every target sets up what it needs (virtualenv, dependencies) by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)
PROTO_FILES := $(wildcard protos/dltmw/v1/*.proto)
BUF := $(CURDIR)/$(VENV)/bin/buf
NODE_EX := examples/node
NODE_STAMP := $(NODE_EX)/node_modules/.installed-$(shell sha256sum $(NODE_EX)/package-lock.json | cut -c1-12)

.PHONY: venv demo test soak unit integration lint protos protos-check wire-breaking wire-release \
	node-example stubs go-plugins browser hsm postgresql systemd bench bench-all clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,bench,hsm,postgresql,jetstream]'
	@rm -f $(VENV)/.installed-*
	@touch $@

## demo: the main job — a capital-market network as real processes doing real work
demo: $(STAMP)
	$(VENV)/bin/dltmw demo

## test: lint, the other-language stubs and the Node.js example, then every test tier.
## Test files run on TEST_WORKERS processes (pytest-xdist, one file per worker at a time, so a
## module's network fixture is started once); TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test: lint stubs node-example browser hsm postgresql systemd
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --durations=30 tests

## soak: the long tier — tests marked `soak` with their soak counts; writes soak-summary.md
soak: $(STAMP)
	rm -f soak-report.jsonl
	DLTMW_TIER=soak DLTMW_SOAK_REPORT=$(CURDIR)/soak-report.jsonl \
		$(PY) -m pytest -q -p no:cacheprovider -m soak --timeout 7200 tests
	$(PY) scripts/soak_summary.py soak-report.jsonl | tee soak-summary.md

unit: $(STAMP) postgresql
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

integration: $(STAMP) node-example browser hsm postgresql systemd
	$(PY) -m pytest -q -p no:cacheprovider tests/integration

lint: $(STAMP) protos-check wire-breaking
	$(VENV)/bin/ruff check dltmw tests benchmarks scripts examples/embedded examples/consortium
	$(VENV)/bin/ruff format --check dltmw tests benchmarks scripts examples/embedded examples/consortium
	$(VENV)/bin/mypy
	cd protos && $(BUF) lint

## wire-breaking: no breaking change against the last released wire contract (a committed image)
wire-breaking: $(STAMP)
	cd protos && $(BUF) breaking --against released/dltmw-v1.binpb

## wire-release: make the current protos/ the released contract that wire-breaking compares with
wire-release: $(STAMP)
	cd protos && $(BUF) build --exclude-source-info -o released/dltmw-v1.binpb

## node-example: the TypeScript Figure 8 client (npm ci from the pinned lockfile, stubs, tsc)
node-example: $(NODE_STAMP)
	cd $(NODE_EX) && npm run --silent build

$(NODE_STAMP): $(NODE_EX)/package-lock.json
	cd $(NODE_EX) && npm ci --no-audit --no-fund --loglevel=error
	@rm -f $(NODE_EX)/node_modules/.installed-*
	@touch $@

## stubs: TypeScript and Go stubs of protos/ into build/stubs (protos/buf.gen.yaml, local plugins)
stubs: $(STAMP) $(NODE_STAMP) go-plugins
	rm -rf build/stubs
	cd protos && $(BUF) generate --template buf.gen.yaml -o ../build/stubs
	test -s build/stubs/ts/dltmw/v1/gateway_service.ts
	test -s build/stubs/go/dltmw/v1/gateway_service_grpc.pb.go

## go-plugins: protoc-gen-go and protoc-gen-go-grpc from Debian when they are missing (as root)
go-plugins:
	@command -v protoc-gen-go >/dev/null && command -v protoc-gen-go-grpc >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq protoc-gen-go protoc-gen-go-grpc; }

## browser: Debian's chromium and its chromedriver for the explorer's browser test, when missing (as root)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }

## hsm: Debian's SoftHSM2 (a PKCS#11 token in files) for the HSM signer's tests, when missing (as root)
hsm:
	@command -v softhsm2-util >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq softhsm2; }

## postgresql: Debian's PostgreSQL server binaries for the `state = "postgresql"` tests, when
## missing (as root); the tests run initdb and postgres themselves (tests/pg_server.py)
postgresql:
	@command -v pg_ctl >/dev/null || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq postgresql; }

## systemd: systemd-analyze, which checks services/deploy's unit template, when missing (as root)
systemd:
	@command -v systemd-analyze >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq systemd; }

## protos: regenerate the committed Python stubs (+ .pyi) from protos/
protos: $(STAMP)
	$(PY) scripts/gen_protos.py dltmw/v1

## protos-check: fail when the committed stubs differ from what protos/ generates
protos-check: $(STAMP)
	$(PY) scripts/gen_protos.py --check dltmw/v1

## bench: the default benchmark (two orgs, AND policy, mTLS, sqlite FULL); appends to benchmarks/RESULTS.md
bench: $(STAMP)
	$(VENV)/bin/dltmw bench

## bench-all: every flow (kv, kv on PBFT-lite, bank, hot, notary, notary cluster, private, UTXO
## DvP), 3 runs each, one table and plot per flow appended to benchmarks/RESULTS.md
## (BENCH_ALL_ARGS shortens or lengthens it, e.g. BENCH_ALL_ARGS="--txs 1000 --duration 10")
## then the large-ledger check: peak RSS of every node through a catch-up of a 10,000-block
## ledger and restart to serving (BIG_LEDGER_ARGS="--ledger-blocks 100000": issue 18's figure)
BENCH_ALL_ARGS ?= --txs 3000 --duration 30
BIG_LEDGER_ARGS ?= --ledger-blocks 10000
bench-all: $(STAMP)
	$(VENV)/bin/dltmw bench --experiment flows --repeat 3 --restart-check $(BENCH_ALL_ARGS)
	$(VENV)/bin/dltmw bench --experiment big-ledger $(BIG_LEDGER_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache $(NODE_EX)/node_modules $(NODE_EX)/dist \
		$(NODE_EX)/src/gen
