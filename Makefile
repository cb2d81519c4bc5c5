# Two commands for a new user: `make demo` and `make test`. Everything else is detail.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast clean-data help ablation docs gpu-check

help:
	@echo "make demo   - install into .venv and rebuild the sample data with dvc repro"
	@echo "make test   - install into .venv (if needed) and run the test suite"
	@echo "make gpu-check - one LoRA step of the full-size transformers on CUDA vs perf/memory_plan.py (GPU_CHECK_ARGS=--smoke: CPU)"
	@echo "make ablation - the miniature region-regularization ablation on CPU (~31 min on 2 cores, results/ablation/)"
	@echo "make docs   - build the manual (docs/) with mkdocs --strict into site/"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade "pip>=24" -q
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	@test -d .git || (git init -q && echo "initialised a git repo (dvc needs one)")
	PATH="$(CURDIR)/$(BIN):$$PATH" DVC_NO_ANALYTICS=1 $(BIN)/dvc repro
	$(BIN)/editkit summary

# The suite (20 slowest tests listed), then the float32 parity tests again under two forced CPU kernel sets: the
# same tests on another CPU sum in another order (docs/development.md, "Float tolerances").
# TEST_WORKERS pytest-xdist workers; tests sharing one costly session resource run on one worker (tests/conftest.py).
TEST_WORKERS ?= 2
test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" DVC_NO_ANALYTICS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=20
	@for cap in default avx2; do \
	  echo "== parity tests with ATEN_CPU_CAPABILITY=$$cap (torch runs: $$(ATEN_CPU_CAPABILITY=$$cap $(BIN)/python -c 'import torch; print(torch.backends.cpu.get_cpu_capability())')) =="; \
	  PATH="$(CURDIR)/$(BIN):$$PATH" DVC_NO_ANALYTICS=1 ATEN_CPU_CAPABILITY=$$cap $(BIN)/python -m pytest -q -m parity || exit 1; \
	done

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration and not slow"

# The miniature region-regularization ablation (docs/ablation.md): builds the sample data if missing.
ablation: $(STAMP)
	@test -d data/export/dataset || (test -d .git || git init -q; PATH="$(CURDIR)/$(BIN):$$PATH" DVC_NO_ANALYTICS=1 $(BIN)/dvc repro export)
	$(BIN)/editkit train ablation --config train/configs/ablation.yaml

# The manual: docs/*.md built with mkdocs; --strict turns broken links into errors.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict -d site

# Measured peak memory and speed of the full-size transformers next to perf/memory_plan.py's prediction (CUDA, < 8 min).
GPU_CHECK_ARGS ?=
gpu-check: $(STAMP)
	$(BIN)/python perf/gpu_check.py --out perf/results/gpu_check$(if $(findstring --smoke,$(GPU_CHECK_ARGS)),_smoke,).json $(GPU_CHECK_ARGS)

clean-data:
	rm -rf data metrics plots
