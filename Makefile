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

.PHONY: setup demo test static check fmt fmt-check lint typecheck protos protos-check unasync unasync-check lock clean bench soak deploy-tools images compose-test up down wheelhouse

# Deployment (deploy/, docker-compose.yml). On a shared machine, CPU_LOCK=/path/to/lockfile runs the
# long jobs (image builds, compose-test) one at a time under flock; unset by default.
CPU_LOCK ?=
LOCKED := $(if $(CPU_LOCK),flock $(CPU_LOCK))
VARIANT ?= cpu
# Unset: `make up` serves ./model_repository, else the models `make demo` left in .demo/repository.
REPOSITORY ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# `make bench` holds this lock for its whole run so its timings are not shared with other heavy
# jobs; BENCH_LOCK= runs it without (RESULTS.md then says so).
BENCH_LOCK ?= /tmp/myelin-cpu.lock

setup: $(STAMP) $(TRITON_STAMP)

$(STAMP): requirements/constraints.txt requirements/dev.txt protos/python/pyproject.toml clients/python/pyproject.toml services/pyproject.toml training/pyproject.toml console/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) -c requirements/constraints.txt -r requirements/dev.txt 2> >(grep -v "is ignored: it is neither" >&2)
	touch $@

$(TRITON_STAMP): requirements/tritonclient.txt
	test -x $(TRITON_VENV)/bin/python || $(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install $(PIP_FLAGS) -r requirements/tritonclient.txt 2> >(grep -v "is ignored: it is neither" >&2)
	touch $@

demo: setup
	$(BIN)/python scripts/demo.py

# What CI runs (.ci/run): the static checks first (format, lint, strict types, generated code in
# step with protos/, the blocking client in step with aio.py), then every test.
test: setup deploy-tools static
	$(BIN)/python -m pytest $(PYTEST_ARGS)

static: fmt-check lint typecheck protos-check unasync-check

# What the deployment tests call besides Python: promtool and a real Prometheus (Debian's prometheus),
# a compose CLI for `config` (Debian's docker-compose, unless `docker compose` works); the console's
# browser tests: Debian's chromium and its chromedriver. Installed only
# when missing; kubectl (kustomize) comes with the machine image.
deploy-tools:
	@missing=""; \
	command -v promtool >/dev/null && command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	test -x /usr/bin/chromedriver || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The service and training images (VARIANT=cpu|gpu), from wheels downloaded on the host.
images: setup
	$(LOCKED) deploy/images/build.sh $(VARIANT)

# The compose suite built, brought up, called through the SDK, checked in Prometheus, torn down.
compose-test: setup
	$(LOCKED) $(BIN)/python scripts/compose_test.py

# The services as local processes on an existing model repository (and Prometheus, when installed).
up: setup
	$(BIN)/python scripts/myelin_stack.py up $(if $(REPOSITORY),--repository $(REPOSITORY))

down: setup
	$(BIN)/python scripts/myelin_stack.py down

# Kept for habit: the same as `make test`.
check: test

# Myelin vs MLServer vs onnxruntime in-process on the classifiers (benchmarks/RESULTS.md), under
# BENCH_LOCK for the whole run.
bench: setup
	$(if $(BENCH_LOCK),flock $(BENCH_LOCK) env MYELIN_BENCH_LOCKED=1) $(BIN)/python benchmarks/classifier/bench.py $(BENCH_ARGS)

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

# The blocking client (clients/python/src/myelin_client/client.py) is generated from aio.py.
unasync: setup
	$(BIN)/python clients/python/unasync.py

unasync-check: setup
	$(BIN)/python clients/python/unasync.py --check

# What an offline GPU host lacks (deploy/gpu/README.md): wheels for Python 3.12, the datasets, in
# parts of at most 50 MB under .wheelhouse/carry/NN; WHEELHOUSE_ARGS="--part-mb 40" and the like.
wheelhouse: setup
	$(BIN)/python deploy/gpu/wheelhouse.py $(WHEELHOUSE_ARGS)

# The soak test's long form (docs/reliability.md): concurrency 64 across the services of REPOSITORY for
# five minutes (SOAK_ARGS="--duration 600" for longer), under BENCH_LOCK like the benchmark; the report
# also goes to .soak/report.json.
soak: setup
	$(if $(BENCH_LOCK),flock $(BENCH_LOCK) env MYELIN_SOAK_LOCKED=1) $(BIN)/python scripts/soak.py --repository $(or $(REPOSITORY),model_repository) --json .soak/report.json $(SOAK_ARGS)

# Re-pin every dependency from a fresh environment.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install $(PIP_FLAGS) -r requirements/dev.txt torch==2.13.0
	{ sed -n '1,2p' requirements/constraints.txt; .lock-venv/bin/pip freeze --exclude-editable | grep -vi '^myelin' | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/'; } > requirements/constraints.txt.new
	mv requirements/constraints.txt.new requirements/constraints.txt && rm -rf .lock-venv

clean:
	rm -rf $(VENV) $(TRITON_VENV) runs .bench .demo .run .soak .pytest_cache .mypy_cache .ruff_cache
