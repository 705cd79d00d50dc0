# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing, and reinstall when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench clean browser

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "iba-jax needs Python >= 3.11; set PYTHON=python3.11 (or newer)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/iba-jax demo

test: $(STAMP) lint browser
	$(BIN)/python -m pytest -n 2 --dist worksteal

# The demo report's browser test needs headless Chromium (Debian's package): installed when
# missing where this runs as root with apt-get; elsewhere that test is skipped, saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	    >/dev/null; } || \
	  echo "chromium is not installed (needs root and apt-get): the browser test will be skipped"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy  # the library's types (pyproject.toml [tool.mypy])

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)  # about 30 minutes on a 2-core CPU
	$(BIN)/python benchmarks/densenet_forward.py
	$(BIN)/python benchmarks/attribution.py
	$(BIN)/python benchmarks/families.py
	$(BIN)/python benchmarks/data_build.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/vs_reference.py  # the reference too with IBA_REFERENCE_PATH/_PYTHON

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
