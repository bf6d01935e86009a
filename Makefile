# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; a plain `torch` would pull a multi-GB CUDA build on machines without a GPU.
TORCH_SPEC ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: setup data test demo lint typecheck ui clean

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" || $(PY) -m pip install -q "$(TORCH_SPEC)" --index-url $(TORCH_CPU_INDEX)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# Fashion-MNIST: the Debian package where apt is there and we are root, else the official mirror.
data: $(VENV)/.installed
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		(apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1) || \
		echo "apt-get could not install dataset-fashion-mnist; trying the official mirror"; \
	fi
	$(VENV)/bin/interplay data --fetch fashion-mnist

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

# The main job: the reference CNN once, then study 1 (dropout x normalization) at the quick
# budget, its analysis and its one-page report.
DEMO_STUDY ?= studies/01-dropout-x-norm.yaml
DEMO_BUDGET ?= quick

demo: setup
	$(VENV)/bin/interplay train studies/baseline.yaml
	$(VENV)/bin/interplay run $(DEMO_STUDY) --budget $(DEMO_BUDGET)
	$(VENV)/bin/interplay analyze $(DEMO_STUDY) --budget $(DEMO_BUDGET)
	$(VENV)/bin/interplay report $(DEMO_STUDY) --budget $(DEMO_BUDGET)
	@echo "Dashboard: make ui (or .venv/bin/interplay ui), then open http://127.0.0.1:5000"

ui: setup
	$(VENV)/bin/interplay ui

clean:
	rm -rf $(VENV) results mlflow.db mlruns
