# The README's commands. `make run` and `make test` install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# the page tests drive Debian's Chromium (Playwright's own browser download is not used)
/usr/bin/chromium:
	apt-get update -qq && apt-get install -y -qq chromium

install: $(STAMP) /usr/bin/chromium

run: $(STAMP)
	$(BIN)/companion serve

test: $(STAMP) /usr/bin/chromium
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check companion tests
	$(BIN)/ruff format --check companion tests

bench: $(STAMP)
	mkdir -p artifacts
	$(BIN)/companion bench models --json artifacts/bench-models.json

clean:
	rm -rf $(VENV) artifacts .pytest_cache
