# Set-up is part of every target: a virtual environment with the CPU build of torch.
# TORCH_SPEC pins the CPU wheel (on this workplace it lies on local disk); override
# PIP_EXTRA_INDEX_URL elsewhere to point pip at a CPU-wheel index.
PYTHON ?= python3.11
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
# The Avalanche drop-in's tests run in an environment of their own: avalanche-lib imports
# torchvision, whose wheels do not load against TORCH_SPEC; these two load together on CPU.
# avalanche-lib is installed without its declared requirements (CUDA-era pins and solvers
# it never imports here); AVALANCHE_DEPS are the packages its training and benchmark
# modules do import.
AV_VENV ?= .venv-avalanche
AV_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
AVALANCHE_DEPS ?= dill==0.4.1 gdown==6.5.1 pytorchcv==0.0.74 matplotlib==3.11.2 \
	wandb==0.31.0 psutil==7.2.2 GPUtil==1.4.0 torchmetrics==1.9.0 tensorboard==2.21.0 \
	qpsolvers==4.13.0
AV_PY := $(AV_VENV)/bin/python
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup setup-avalanche test test-main test-avalanche demo lint shape bench bench-avalanche clean

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]" "$(TORCH_SPEC)"
	touch $@

setup: $(VENV)/.installed

$(AV_VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 1; }
	$(PYTHON) -m venv $(AV_VENV)
	$(AV_PY) -m pip install --quiet --upgrade pip
	$(AV_PY) -m pip install --quiet $(AV_TORCH_SPEC)
	$(AV_PY) -m pip install --quiet --no-deps avalanche-lib==0.6.0
	$(AV_PY) -m pip install --quiet $(AVALANCHE_DEPS) $(AV_TORCH_SPEC)
	$(AV_PY) -m pip install --quiet -e ".[dev]" $(AV_TORCH_SPEC)
	touch $@

setup-avalanche: $(AV_VENV)/.installed

# The main suite (two pytest-xdist workers) while the Avalanche environment installs (it is
# mostly downloads), then the Avalanche drop-in's tests (tests/avalanche/) in that environment.
test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(MAKE) --no-print-directory -j2 --output-sync=target test-main setup-avalanche
	$(MAKE) --no-print-directory test-avalanche

test-main: setup
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --ignore=tests/avalanche

test-avalanche: setup-avalanche
	$(AV_PY) -m pytest -q -p no:cacheprovider tests/avalanche

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

bench-avalanche: setup-avalanche
	OMP_NUM_THREADS=1 $(AV_PY) tools/bench_avalanche.py

clean:
	rm -rf $(VENV) $(AV_VENV)
