# modelwatch: `make demo` runs the whole job on a local real stack; `make test` passes the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.8
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.lock | cut -c1-12)

.PHONY: install test unit lint demo up down stack-up stack-down seed lock bench clean replay

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml scripts/ensure-system-deps.sh Makefile
	@scripts/ensure-system-deps.sh
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@[ -x $(PY) ] || $(PYTHON) -m uv venv --quiet --python $(PYTHON) $(VENV)
	$(PYTHON) -m uv pip sync --quiet --compile-bytecode --python $(PY) requirements.lock
	@# modelwatch itself, as a user installs it (editable here, so edits under src/ need no reinstall);
	@# its entry point registers the provider (connection types) with Airflow. The lock already holds
	@# every dependency, so nothing else moves.
	$(PYTHON) -m uv pip install --quiet --no-deps --python $(PY) -e .
	@rm -f $(VENV)/.installed-* && touch $@

lock:
	$(PYTHON) -m uv pip compile --quiet --python-version 3.11 requirements.txt -o requirements.lock

lint: install
	$(VENV)/bin/ruff check .

# the whole suite on two pytest-xdist workers: the server tests in two groups with a stack each, the pure
# tests wherever a worker is free (tests/conftest.py). TEST_WORKERS=0 runs it in one process, one stack.
TEST_WORKERS ?= 2
test: install lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

# the inner loop: lint, the pure functions and the DAG files; no server started. On two pytest-xdist workers
# (UNIT_WORKERS=0 runs them in this process).
UNIT_WORKERS ?= 2
unit: install lint
	$(PY) -m pytest -q -n $(UNIT_WORKERS) tests/unit tests/dags

up: install
	$(PY) -m devstack up

down:
	@[ -x $(PY) ] && $(PY) -m devstack down || true

stack-up: install
	$(PY) -m devstack up --no-airflow

stack-down:
	@[ -x $(PY) ] && $(PY) -m devstack down || true

seed: install
	$(PY) -m devstack seed

demo: install
	$(PY) -m devstack demo $(DEMO_ARGS)

# Judge the stored days again under another thresholds.yaml, without posting: make replay CANDIDATE=my.yaml
# (FROM/TO limit the days; LAKE defaults to the demo's lake).
CANDIDATE ?= include/thresholds.yaml
LAKE ?= file://$(CURDIR)/.stack/lake
replay: install
	$(PY) -m modelwatch.replay --candidate $(CANDIDATE) --lake $(LAKE) $(if $(FROM),--from $(FROM)) $(if $(TO),--to $(TO))

bench: install
	$(PY) -m bench

clean: stack-down
	rm -rf .stack
