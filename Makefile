# The two commands a fresh machine needs: `make run` and `make test`. Everything else is set up here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BENCH_VENV ?= .venv-bench
HOST ?= 127.0.0.1
PORT ?= 8000
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test lint bench sysdeps venv venv-dev lock clean

## run: set up the runtime environment and serve the app on http://$(HOST):$(PORT)
run: venv
	$(VENV)/bin/chainlit run chainlit_app_voice.py --headless --host $(HOST) --port $(PORT)

## test: install what the tests need (redis-server, test deps) and run the whole suite
test: sysdeps venv-dev
	$(PY) -m pytest $(PYTEST_ARGS)

## lint: ruff (check + format) and mypy --strict on resilience/ and rag/
lint: venv-dev
	$(VENV)/bin/ruff check resilience rag tests bench chainlit_app_voice.py
	$(VENV)/bin/ruff format --check resilience rag tests bench chainlit_app_voice.py
	$(VENV)/bin/mypy

## bench: side-by-side benchmarks against peer libraries (not a test; prints medians and ratios)
bench: sysdeps venv-dev $(BENCH_VENV)/.installed
	$(PY) bench/run.py --bench-python $(BENCH_VENV)/bin/python

venv: $(VENV)/.runtime
venv-dev: $(VENV)/.dev

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

$(BENCH_VENV)/.installed: requirements-bench.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements-bench.txt
	touch $@

## sysdeps: system packages the tests start themselves (redis-server; Debian's chromium for the browser UI
## test, driven by playwright with executable_path, never a downloaded browser); you are root on test machines
sysdeps:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-liberation >/dev/null; }

## lock: re-resolve requirements*.txt from the direct dependencies (needs the package registry)
lock:
	rm -rf /tmp/lock-venv && $(PYTHON) -m venv /tmp/lock-venv
	/tmp/lock-venv/bin/pip install -q chainlit==2.12.0 redis==8.2.0 openai==3.60.0 pypdf==7.1.1
	@echo "now compare /tmp/lock-venv/bin/pip freeze with requirements.txt"

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache
