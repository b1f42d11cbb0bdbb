# taskwire — every command the team runs. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
TOOLS := .tools
BUF := $(TOOLS)/node_modules/.bin/buf
BUF_VERSION := 1.75.0
PROTOC_GEN_ES := $(TOOLS)/node_modules/.bin/protoc-gen-es
PROTOC_GEN_ES_VERSION := 2.17.0
PROTO_DIR := protos
PROTO_FILES := $(wildcard $(PROTO_DIR)/taskwire/v1/*.proto)
NODE_EXAMPLE := examples/node
TS_SDK := sdks/typescript
TS_SOURCES := $(wildcard $(TS_SDK)/src/*.ts $(TS_SDK)/test/*.ts) $(TS_SDK)/tsconfig.json
# Parallel test workers: half again as many as the cores this process may use, unless told otherwise. Most
# tests wait on real servers, workers and timers rather than compute: one worker per core keeps the cores
# less than half busy, and the suite ran in about two thirds of the time with three workers on two cores.
PYTEST_WORKERS ?= $(shell echo $$(( $$(nproc) * 3 / 2 )))

.PHONY: help
help: ## List the targets.
	@grep -E '^[a-z][a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "taskwire needs Python 3.11+"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(call import_tree,$(IMPORT_TREE))
	touch $@

# The folders install under one import root (pyproject's package-dir). For mypy, which reads files rather
# than import hooks, the same mapping is a tree of links: taskwire/{v1,common,client,console,server,worker}.
IMPORT_TREE := $(VENV)/import-tree/taskwire
define import_tree
	rm -rf $(1) && mkdir -p $(1)
	ln -s $(CURDIR)/protos/taskwire/__init__.py $(CURDIR)/protos/taskwire/py.typed $(1)/
	ln -s $(CURDIR)/protos/taskwire/v1 $(1)/v1
	ln -s $(CURDIR)/common $(1)/common
	ln -s $(CURDIR)/client $(1)/client
	ln -s $(CURDIR)/console $(1)/console
	ln -s $(CURDIR)/server $(1)/server
	ln -s $(CURDIR)/worker_agent $(1)/worker
	ln -s $(CURDIR)/conformance $(1)/conformance
endef

.PHONY: install
install: $(STAMP) ## Create .venv and install taskwire with its dev tools.

$(BUF):
	mkdir -p $(TOOLS)
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) @bufbuild/buf@$(BUF_VERSION)

$(PROTOC_GEN_ES): $(BUF)
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) @bufbuild/protoc-gen-es@$(PROTOC_GEN_ES_VERSION)

# The Node.js example's packages, exactly as its package-lock.json pins them (the polyglot tests run it).
$(NODE_EXAMPLE)/node_modules: $(NODE_EXAMPLE)/package.json $(NODE_EXAMPLE)/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix $(NODE_EXAMPLE)
	touch $@

# The TypeScript worker's packages (package-lock.json pins them), its build (tsc, strict) and its unit tests.
$(TS_SDK)/node_modules: $(TS_SDK)/package.json $(TS_SDK)/package-lock.json
	npm ci --silent --no-audit --no-fund --prefix $(TS_SDK)
	touch $@

$(TS_SDK)/dist/.built: $(TS_SDK)/node_modules $(TS_SOURCES)
	rm -rf $(TS_SDK)/dist
	$(TS_SDK)/node_modules/.bin/tsc -p $(TS_SDK)/tsconfig.json
	touch $@

.PHONY: ts-build
ts-build: $(TS_SDK)/dist/.built ## Build the TypeScript worker (sdks/typescript) with tsc.

.PHONY: ts-test
ts-test: $(TS_SDK)/dist/.built ## The TypeScript worker's unit tests (node --test).
	cd $(TS_SDK) && node --test dist/test/

.PHONY: protos
protos: $(STAMP) ## Regenerate the Python stubs from protos/.
	$(call generate,$(PROTO_DIR))

# generate(out_dir): run protoc with the Python, gRPC and mypy plugins.
define generate
	$(PY) -m grpc_tools.protoc -I $(PROTO_DIR) \
	  --plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
	  --plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
	  --python_out=$(1) --grpc_python_out=$(1) --mypy_out=$(1) --mypy_grpc_out=$(1) \
	  $(PROTO_FILES)
endef

.PHONY: protos-check
protos-check: $(STAMP) $(BUF) ## Fail when the committed stubs are stale or buf lint complains.
	$(BUF) lint
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  $(call generate,$$tmp) && \
	  for f in $$(cd $$tmp && find . -name '*_pb2*' -type f); do \
	    diff -q "$$tmp/$$f" "$(PROTO_DIR)/$$f" >/dev/null || { echo "stale stub: $(PROTO_DIR)/$$f (run 'make protos')"; exit 1; }; \
	  done; echo "protos: stubs fresh, buf lint clean"

# Stubs for other languages generate cleanly from the protos: TypeScript (protoc-gen-es from npm, run by buf),
# Java (protoc's own generator) and Go with gRPC (protoc-gen-go and protoc-gen-go-grpc), the last two from
# Debian's packages, installed here when missing.
DEBIAN_PROTOC := protobuf-compiler protoc-gen-go protoc-gen-go-grpc

.PHONY: protos-languages
protos-languages: $(STAMP) $(BUF) $(PROTOC_GEN_ES) ## Check that TypeScript, Java and Go stubs generate from protos/.
	@command -v protoc >/dev/null && command -v protoc-gen-go >/dev/null && command -v protoc-gen-go-grpc >/dev/null || \
	  { echo "installing $(DEBIAN_PROTOC) (Debian packages)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q --no-install-recommends $(DEBIAN_PROTOC) >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get install -y -q --no-install-recommends $(DEBIAN_PROTOC) >/dev/null; }; }
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && mkdir -p $$tmp/java $$tmp/go && \
	  $(BUF) generate --template '{"version":"v2","plugins":[{"local":"$(PROTOC_GEN_ES)","out":"'"$$tmp"'/ts","opt":["target=ts"]}]}' && \
	  protoc -I $(PROTO_DIR) --java_out=$$tmp/java --go_out=$$tmp/go --go-grpc_out=$$tmp/go $(PROTO_FILES) && \
	  test -s $$tmp/ts/taskwire/v1/worker_service_pb.ts && test -d $$tmp/java/dev/taskwire/v1 && \
	  test -n "$$(find $$tmp/go -name worker_service_grpc.pb.go)" && \
	  echo "protos: TypeScript, Java and Go stubs generate ($$(find $$tmp -type f | wc -l) files)"

.PHONY: lint
lint: $(STAMP) ## ruff check and format check.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

.PHONY: fmt
fmt: $(STAMP) ## Apply ruff fixes and formatting.
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: typecheck
typecheck: $(STAMP) ## mypy --strict on our code (generated stubs excluded).
	$(call import_tree,$(IMPORT_TREE))
	$(BIN)/mypy

.PHONY: test
test: $(STAMP) protos-check protos-languages lint typecheck $(NODE_EXAMPLE)/node_modules ts-test ## Everything CI checks: stubs, lint, types, the whole suite.
	$(BIN)/pytest -n $(PYTEST_WORKERS) -p no:cacheprovider

# The long versions of the fault tests, outside CI: an hour of load with random faults (TASKWIRE_SOAK_SECONDS)
# and the fuzz tests with 7,000 examples per method and kind, over 100,000 in all (TASKWIRE_FUZZ_EXAMPLES).
SOAK_SECONDS ?= 3600
FUZZ_EXAMPLES ?= 7000

.PHONY: soak
soak: $(STAMP) ## Long fault runs outside CI: an hour of load with random faults, then >100,000 fuzz cases.
	TASKWIRE_SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/pytest -p no:cacheprovider -s --timeout=0 tests/integration/faults/test_soak.py
	TASKWIRE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) TASKWIRE_FUZZ_RANDOM=1 $(BIN)/pytest -p no:cacheprovider -n $(PYTEST_WORKERS) \
	  --timeout=0 tests/integration/faults/test_fuzz.py

.PHONY: unit
unit: $(STAMP) ## The unit tests only, fast.
	$(BIN)/pytest tests/unit -q

.PHONY: run
# Where `make run` serves its Prometheus metrics.
METRICS_LISTEN ?= 127.0.0.1:9464

run: $(STAMP) ## Start the control plane (SQLite store) with a local worker, in the foreground.
	$(BIN)/taskwire-server --with-local-worker --metrics-listen $(METRICS_LISTEN)

# Where `make console` serves the web console (for the server `make run` starts, on its default address).
CONSOLE_LISTEN ?= 127.0.0.1:8080

.PHONY: console
console: $(STAMP) ## Serve the web console for the server of `make run` on http://127.0.0.1:8080, in the foreground.
	$(BIN)/taskwire console --listen $(CONSOLE_LISTEN)

# The console's browser tests use Debian's chromium (their fixture installs it too when missing).
.PHONY: chromium
chromium: ## Install Debian's chromium for the console's browser tests (apt-get, when missing).
	test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

.PHONY: console-screenshots
console-screenshots: $(STAMP) chromium ## Run the console's browser tests and save their screenshots into docs/console/.
	TASKWIRE_CONSOLE_SCREENSHOTS=docs/console $(BIN)/pytest -p no:cacheprovider -q tests/integration/console/test_browser.py

# The peers the benchmarks compare with, each in its own virtualenv from its pinned requirements.
PEERS := celery dramatiq procrastinate
PEERS_STAMPS := $(foreach peer,$(PEERS),bench/.venv-$(peer)/.installed)

bench/.venv-%/.installed: bench/requirements-%.txt
	test -x bench/.venv-$*/bin/python || $(PYTHON) -m venv bench/.venv-$*
	bench/.venv-$*/bin/python -m pip install --quiet --upgrade pip
	bench/.venv-$*/bin/python -m pip install --quiet -r $<
	touch $@

.PHONY: redis-server
redis-server: ## Debian's redis-server, for the Celery and Dramatiq peers (apt-get, when missing).
	command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

.PHONY: bench-deps
bench-deps: redis-server $(PEERS_STAMPS) ## The peers: redis-server (apt); Celery, Dramatiq, procrastinate in bench/.venv-<peer>.

.PHONY: bench
bench: $(STAMP) bench-deps ## Run the benchmarks and print the comparison (ARGS="--quick" etc. are passed on).
	$(PY) -m bench $(ARGS)

.PHONY: clean
clean: ## Remove the virtualenv, tools and caches.
	rm -rf $(VENV) $(TOOLS) $(NODE_EXAMPLE)/node_modules $(TS_SDK)/node_modules $(TS_SDK)/dist .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
