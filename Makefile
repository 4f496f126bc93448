# Two commands matter: `make demo` and `make test`. Both set everything up from scratch.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9

.PHONY: install demo stop status test test-fast lint bench-serving bench-validation bench-batch clean

# Compiled bytecode: with PYTHONDONTWRITEBYTECODE set (as on these machines) every process
# would otherwise compile airflow, mlflow and scikit-learn from source at each import
# (a model server's cold start 8 s instead of 3.5 s; every Airflow task process slower).
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install --quiet --python $(PY) --compile-bytecode -r requirements.txt
	$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps --editable .
	touch $@

install: $(VENV)/.installed

## Start the embedded stack (Airflow, MLflow), run continuous_training, print how to call the model.
demo: install
	$(PY) -m ctcd.stack demo

## Stop every process `make demo` started (by pid).
stop:
	@if [ -x $(PY) ]; then $(PY) -m ctcd.stack stop; else echo "nothing to stop"; fi

status: install
	$(PY) -m ctcd.stack status

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not e2e"

lint: install
	$(VENV)/bin/ruff check plugins dags tests bench
	$(VENV)/bin/mypy plugins dags bench

clean: stop
	rm -rf .state

## Benchmark the model server against `mlflow models serve` (needs wrk: apt-get install wrk).
bench-serving: install
	$(PY) bench/serving/bench_serving.py

## Time the Great Expectations checkpoint on 20,000 and 1,000,000 rows.
bench-validation: install
	$(PY) bench/validation/bench_validation.py

## Benchmark batch scoring (rows/s vs one predict call, peak RSS at 1M/10M rows) and the
## streaming scorer (msgs/s vs HTTP, messages lost after a kill). Needs redis-server.
## BENCH_ARGS=--quick for a short run.
bench-batch: install
	$(PY) bench/batch/bench_batch.py $(BENCH_ARGS)
