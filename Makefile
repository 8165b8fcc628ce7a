# The two commands of the README: `make demo` and `make test`. Both set up what they need.
VENV        ?= .venv
PYTHON      ?= python3
TORCH_SPEC  ?= torch==2.13.0
BIN         := $(VENV)/bin
DATASET     ?= $(firstword $(wildcard ../shared/multipl-e/humaneval))
# `make test` executes every offered language (languages/*.toml), so it builds every image;
# `make images TEST_IMAGES="py rb"` builds only those (the other languages' tests then fail).
TEST_IMAGES ?= --all
DEMO_LANGS  ?= py pl

.PHONY: setup docker chromium images images-check test test-fast demo lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[test,dask]'  # the dask extra's tests run in CI too
	touch $@

docker:
	scripts/ensure-docker.sh

chromium:
	scripts/ensure-chromium.sh

images: setup docker
	$(BIN)/flora-eval images build $(TEST_IMAGES)

images-check: setup docker
	$(BIN)/flora-eval images check

test: setup docker chromium images
	$(BIN)/ruff check harness tests
	$(BIN)/lint-imports
	$(BIN)/pytest -q

test-fast: setup
	$(BIN)/pytest -q -m "not docker and not slow"

demo: setup docker
	$(BIN)/flora-eval images build $(DEMO_LANGS)
	scripts/demo.sh

lint: setup
	$(BIN)/ruff check harness tests
	$(BIN)/lint-imports  # the layering in .importlinter
