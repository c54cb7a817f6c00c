# Every target is one line; `make run` and `make test` are the README's two commands.
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test setup setup-dev lint bench image-smoke clean

run: setup ## install what is missing, then serve on http://$(HOST):$(PORT)
	@echo "cortexlens: starting on http://$(HOST):$(PORT)" && $(BIN)/cortexlens serve --host $(HOST) --port $(PORT)

test: setup-dev ## install what is missing (with the dev tools), then run the whole test suite
	$(BIN)/python -m pytest

lint: setup-dev
	$(BIN)/ruff check app tests && $(BIN)/mypy app

bench: setup-dev ## performance figures; writes bench/results.json
	$(BIN)/pip install --quiet -e '.[dev,bench]' && $(BIN)/python -m bench

image-smoke: ## build the container image and drive it over HTTP
	bash scripts/image-smoke.sh

setup: $(VENV)/.installed static/vendor/htmx.min.js
setup-dev: $(VENV)/.installed-dev static/vendor/htmx.min.js

$(VENV)/bin/python:
	python3 -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e . && touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet -e '.[dev]' && touch $(VENV)/.installed $@

static/vendor/htmx.min.js:
	bash scripts/fetch-htmx.sh

clean:
	rm -rf $(VENV) static/vendor .pytest_cache .ruff_cache .mypy_cache
