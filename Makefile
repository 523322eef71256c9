# The README's two commands: `make demo` and `make test`. Both set up their own environment.
# Uses the active virtual environment if there is one, else creates .venv here.
SHELL := /bin/bash
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := $(CURDIR)/.venv
endif
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
# Where a CPU-only machine gets torch's CPU build when no local +cpu wheel is on hand (torch alone,
# --no-deps; its dependencies and everything else come from pip's configured index).
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
EXTRAS ?= test,plots,mpi,wandb
# One stamp per torch version and extras: changing either reinstalls.
comma := ,
STAMP := $(VENV)/.megajepa-installed-torch$(TORCH_VERSION)-$(subst $(comma),-,$(EXTRAS))
# DeepSpeed's JIT-built ops cached per virtual environment, so two environments never rebuild each other's.
export TORCH_EXTENSIONS_DIR := $(VENV)/torch_extensions
# a hung test fails alone (its subprocesses killed) instead of eating the whole CI budget; -rs names
# every skipped test and why (a Slurm cluster that could not start skips its tests)
PYTEST_ARGS ?= --timeout=900 -rs

.PHONY: install demo test bench clean

$(PY):
	python3 -m venv $(VENV)

# torch first, CPU build where there is no CUDA: a local +cpu wheel if pip can find one, else the
# CPU index; never the multi-GB CUDA wheel on a machine that cannot use it.
$(STAMP): setup.py | $(PY)
	@if $(PY) -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$(TORCH_VERSION)') else 1)" 2>/dev/null; then \
	  echo "torch $(TORCH_VERSION) already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	  $(PIP) install "torch==$(TORCH_VERSION)"; \
	elif $(PIP) install --no-index --no-deps "torch==$(TORCH_VERSION)+cpu" 2>/dev/null; then \
	  echo "torch $(TORCH_VERSION)+cpu from a local wheel"; \
	else \
	  $(PIP) install "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX) --no-deps; \
	fi
	$(PIP) install -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.megajepa-installed*
	touch $(STAMP)

install: $(STAMP)

# The demo evaluates the embedded corpus's held-out split (200 examples, exact and regex equivalence)
# half-way and at the end; the end-of-run summary prints the scores.
demo: install
	@echo "first run on a fresh machine: DeepSpeed builds its CPU Adam op once (about a minute, cached in $(TORCH_EXTENSIONS_DIR))"
	$(VENV)/bin/deepspeed --num_gpus 1 megajepa/train.py --config configs/demo.yaml

test: install
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

# runs/ holds checkpoints and reports: never deleted here.
clean:
	rm -rf .pytest_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
