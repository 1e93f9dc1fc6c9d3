# The one entry point. `make demo` runs the suite end to end; `make test` runs every test.
# Both build .venv themselves (python3.11, pinned by requirements/constraints.txt).

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# tritonclient needs protobuf < 7 and its own descriptor pool: a virtualenv of its own (tests only).
TRITON_VENV := .venv-tritonclient
TRITON_STAMP := $(TRITON_VENV)/.installed
export MYELIN_DATA_DIR ?= $(abspath ../shared/data)
PIP_FLAGS := --quiet --disable-pip-version-check

.PHONY: setup demo test check fmt fmt-check lint typecheck protos protos-check lock clean bench

setup: $(STAMP) $(TRITON_STAMP)

$(STAMP): requirements/constraints.txt requirements/dev.txt protos/python/pyproject.toml clients/python/pyproject.toml services/pyproject.toml training/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) -c requirements/constraints.txt -r requirements/dev.txt 2> >(grep -v "is ignored: it is neither" >&2)
	touch $@

$(TRITON_STAMP): requirements/tritonclient.txt
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install $(PIP_FLAGS) -r requirements/tritonclient.txt 2> >(grep -v "is ignored: it is neither" >&2)
	touch $@

demo: setup
	$(BIN)/python scripts/demo.py

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: fmt-check lint typecheck protos-check test

# Myelin vs MLServer vs onnxruntime in-process on the classifiers (benchmarks/RESULTS.md). Holds the
# machine-wide CPU lock for the whole run so heavy jobs run one at a time and timings are honest.
bench: setup
	flock /tmp/myelin-cpu.lock env MYELIN_BENCH_LOCKED=1 $(BIN)/python benchmarks/classifier/bench.py $(BENCH_ARGS)

fmt: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

fmt-check: setup
	$(BIN)/ruff format --check .

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy

protos: setup
	$(BIN)/python protos/python/generate.py

# Regenerate into a temporary folder and fail on any difference from the committed code.
protos-check: setup
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	$(BIN)/python protos/python/generate.py --out $$tmp && \
	diff -r -x __pycache__ $$tmp/myelin_api protos/python/src/myelin_api && echo "generated code matches protos/"

# Re-pin every dependency from a fresh environment.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install $(PIP_FLAGS) -r requirements/dev.txt torch==2.13.0
	{ sed -n '1,2p' requirements/constraints.txt; .lock-venv/bin/pip freeze --exclude-editable | grep -vi '^myelin' | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/'; } > requirements/constraints.txt.new
	mv requirements/constraints.txt.new requirements/constraints.txt && rm -rf .lock-venv

clean:
	rm -rf $(VENV) $(TRITON_VENV) runs .bench .demo .pytest_cache .mypy_cache .ruff_cache
