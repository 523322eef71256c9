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
# Where a CPU-only machine gets torch when no local CPU wheel is on hand.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.megajepa-installed
# a hung test fails alone (its subprocesses killed) instead of eating the whole CI budget
PYTEST_ARGS ?= --timeout=900

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
	  $(PIP) install "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX) --extra-index-url https://pypi.org/simple; \
	fi
	$(PIP) install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/deepspeed --num_gpus 1 megajepa/train.py output_dir=runs/demo

test: install
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache
