# The README's commands. `make run` and `make test` install what they need first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean vendor

# llama.cpp for any x86-64 with AVX2, not -march=native: a native build on a CPU with Intel AMX
# puts quantized weights in ggml's AMX buffers, whose matmul segfaulted (llama-cpp-python 0.3.36)
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

# the page tests drive Debian's Chromium (Playwright's own browser download is not used)
/usr/bin/chromium:
	apt-get update -qq && apt-get install -y -qq chromium

# the loopback topology test (tests/server/test_topology.py): nginx in front of two instances,
# generating on two llama-server processes built from the llama.cpp that llama-cpp-python vendors
# (built once, cached outside the checkout: ~12 minutes on 2 cores)
/usr/sbin/nginx:
	apt-get update -qq && apt-get install -y -qq nginx-light

LLAMA_SERVER := $(HOME)/.cache/companion/llama-server-0.3.36/llama-server
$(LLAMA_SERVER):
	PYTHON=$(PYTHON) JOBS=$$(nproc) scripts/build-llama-server.sh

install: $(STAMP) /usr/bin/chromium

run: $(STAMP)
	$(BIN)/companion serve

test: $(STAMP) /usr/bin/chromium /usr/sbin/nginx $(LLAMA_SERVER)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check companion tests
	$(BIN)/ruff format --check companion tests

bench: $(STAMP)
	mkdir -p artifacts
	$(BIN)/companion bench models --json artifacts/bench-models.json

# the page's Markdown, sanitiser and highlighter from npm, with their licences (committed)
vendor:
	scripts/vendor-web.sh

clean:
	rm -rf $(VENV) artifacts .pytest_cache
