# Two commands matter: `make demo` and `make test`. Both set everything up from scratch.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
# The system packages each target needs are listed once, in this script (.ci/run uses it too):
# `ensure` installs what is missing as root, else stops with the command to run.
SYSTEM := scripts/system-packages.sh

.PHONY: install requirements demo demo-scale stop status test test-fast test-scale kube-binaries lint docs screenshot bench-serving bench-validation bench-batch bench-ui clean

# Compiled bytecode: with PYTHONDONTWRITEBYTECODE set (as on these machines) every process
# would otherwise compile airflow, mlflow and scikit-learn from source at each import
# (a model server's cold start 8 s instead of 3.5 s; every Airflow task process slower).
# Development installs both pinned lists: requirements.txt (what the project runs on; the
# Airflow image installs only this one) and requirements-dev.txt (tests, lint, docs).
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --python $(PY) --compile-bytecode \
		-r requirements.txt -r requirements-dev.txt
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps --editable .
	touch $@

install: $(VENV)/.installed

## Recompile the exact pins from requirements.in and requirements-dev.in (needs the package
## index). Pins already in the .txt files stay unless a change needs them to move;
## UV_ARGS='--upgrade-package NAME' moves one on purpose. Environment markers stay in the pins
## (tl2cgen is pinned only where it has wheels).
COMPILE = $(VENV)/bin/uv pip compile --quiet --python-version 3.11.5 --no-strip-markers \
	--custom-compile-command "make requirements" $(UV_ARGS)
requirements: install
	$(COMPILE) requirements.in -o requirements.txt
	$(COMPILE) requirements-dev.in -o requirements-dev.txt

## Start the embedded stack (Airflow, MLflow), run continuous_training, print how to call the model.
demo: install
	$(SYSTEM) ensure demo
	$(PY) -m ctcd.stack demo

## Stop every process `make demo` started (by pid).
stop:
	@if [ -x $(PY) ]; then $(PY) -m ctcd.stack stop; else echo "nothing to stop"; fi

status: install
	$(PY) -m ctcd.stack status

test: install kube-binaries
	$(SYSTEM) ensure test
	$(PY) -m pytest -m "not scale" --durations=25

test-fast: install kube-binaries
	$(SYSTEM) ensure test
	$(PY) -m pytest -m "not e2e and not scale"

## The Kubernetes control plane the Kubernetes tests run against (etcd, kube-apiserver,
## kube-controller-manager), from Debian's packages: built once (about 8 minutes on one core),
## then taken from the cache outside the checkout (scripts/kube-binaries.sh says where).
kube-binaries:
	@scripts/kube-binaries.sh ensure >/dev/null

## The scale profile: the docker-compose layout as local processes (PostgreSQL, Redis, Airflow
## with the CeleryExecutor and two workers, MLflow on PostgreSQL), driven over the REST API.
## Needs PostgreSQL server binaries and redis-server (installed here when missing).
test-scale: install
	$(SYSTEM) ensure test-scale
	$(PY) -m pytest -m scale

## `make demo` on the scale profile (stop it with `make stop`).
demo-scale: install
	$(SYSTEM) ensure demo-scale
	$(PY) -m ctcd.stack demo --profile scale

lint: install
	$(VENV)/bin/ruff check plugins dags tests bench scripts
	$(VENV)/bin/mypy plugins dags bench scripts

## The documentation site (docs/, mkdocs.yml) into site/: first the reference pages generated
## from the code (DAG Params, CLI, settings, the server's OpenAPI operations, file formats;
## commit what changes), then the build with --strict (a broken link or anchor, or a page
## missing from the nav, fails it). No network.
docs: install
	$(PY) -m scripts.docs_reference
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

## Screenshots of the running demo's Airflow UI for the docs: the churn_training DAG
## (docs/getting-started/airflow-ui.png) and the deployments view (docs/concepts/
## deployments-view.png); run `make demo` first. SCREENSHOT_ARGS='--page deployments' for one.
## Debian's chromium (installed when missing), driven by Playwright.
screenshot: install
	$(SYSTEM) ensure screenshot
	$(PY) -m scripts.screenshot_ui $(SCREENSHOT_ARGS)

clean:
	@if [ -x $(PY) ]; then $(PY) -m ctcd.stack clean; fi
	rm -rf .state site

## Benchmark the model server against MLServer and `mlflow models serve` (installs wrk when
## missing, and MLServer into .state/bench on first use). BENCH_ARGS=--quick for short cells.
bench-serving: install
	$(SYSTEM) ensure bench-serving
	$(PY) bench/serving/bench_serving.py $(BENCH_ARGS)

## Time the Great Expectations checkpoint on 20,000 and 1,000,000 rows.
bench-validation: install
	$(PY) bench/validation/bench_validation.py

## Benchmark batch scoring (rows/s vs one predict call, peak RSS at 1M/10M rows) and the
## streaming scorer (msgs/s vs HTTP, messages lost after a kill). Needs redis-server.
## BENCH_ARGS=--quick for a short run.
bench-batch: install
	$(SYSTEM) ensure bench-batch
	$(PY) bench/batch/bench_batch.py $(BENCH_ARGS)

## Time the deployments page with 20 deployments, one a dead server (20 real model servers
## behind Airflow's API server): the server's render time over loopback (median and max) and
## the page's load in Debian's chromium. BENCH_ARGS='--no-browser' or '--servers 10' for less.
bench-ui: install
	$(SYSTEM) ensure bench-ui
	$(PY) bench/ui/bench_ui.py $(BENCH_ARGS)
