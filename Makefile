# Each target installs what it needs first, and is quick when all is already installed.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
WEB_STAMP := web/node_modules/.installed
CHROMIUM  := /usr/bin/chromium
REDIS     := /usr/bin/redis-server
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install serve test lint format bench web-deps chromium redis clean screenshots

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): pyproject.toml setup.py | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

web-deps: $(WEB_STAMP)

$(WEB_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

chromium: $(CHROMIUM)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# The distributed mode's tests start their own redis-server (Debian's package, as for Chromium).
redis: $(REDIS)

$(REDIS):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server

serve: install web-deps
	$(VENV)/bin/fluxloom serve $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# One pytest run; it includes schemathesis against a live `fluxloom serve` (tests/hardening).
test: install web-deps chromium redis lint
	$(PY) -m pytest $(PYTEST_ARGS)

# Refresh the README's pictures (the tests themselves never write into the checkout).
screenshots: install web-deps chromium
	FLUXLOOM_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/browser/test_browser_run.py tests/browser/test_browser_nodes.py
	$(PY) tests/frontend/screenshots.py --out docs/screenshots

bench: install
	$(PY) bench/executor.py
	$(PY) bench/server.py
	$(PY) bench/sampler.py
	$(PY) bench/memory.py
	$(PY) bench/scaleout.py
	$(PY) bench/previews.py
	$(PY) bench/robustness.py

clean:
	rm -rf $(VENV) web/node_modules
