# Set-up is part of every target: a virtual environment with the CPU build of torch.
# TORCH_SPEC pins the CPU wheel (on this workplace it lies on local disk); override
# PIP_EXTRA_INDEX_URL elsewhere to point pip at a CPU-wheel index.
PYTHON ?= python3.11
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup test demo lint shape bench clean

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]" "$(TORCH_SPEC)"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -p no:cacheprovider

demo: setup
	$(PY) examples/split_digits.py

lint: setup
	$(VENV)/bin/ruff check memstore tests tools examples
	$(VENV)/bin/ruff format --check memstore tests tools examples

# The package's shape (issue 7): the import-linter layers contract (pyproject.toml) and the
# AST checks of tools/check_shape.py (cycles, private imports, reach-ins, sizes, sniffing).
shape: setup
	$(VENV)/bin/lint-imports
	$(PY) tools/check_shape.py

bench: setup
	OMP_NUM_THREADS=1 $(PY) tools/bench_selection.py

clean:
	rm -rf $(VENV)
