# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Each creates .venv (and what else it needs) on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# On these CPU machines torch==2.13.0 is a CPU wheel on local disk; on a GPU box an existing
# torch in the venv is kept (TORCH_SPEC= to skip). Never an unpinned torch: that pulls CUDA.
TORCH_SPEC ?= torch==2.13.0
MODEL ?= sol-tiny-wan
GPU ?= auto
WORKLOAD ?= default

.PHONY: demo test test-all setup vbench-env browser lint clean

$(BIN)/sol: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[optimize,dev]'
	touch $(BIN)/sol

setup: $(BIN)/sol

# The main job: optimize the embedded reference model and print where the plan and report are.
# VBench's env first (once: ~2 min, 2.2 GB), so the quality gate measures a VBench dimension
# (temporal_flickering needs no weights) instead of reporting it skipped.
demo: setup vbench-env
	$(BIN)/sol optimize --model $(MODEL) --gpu $(GPU) --workload $(WORKLOAD) --approve auto

# VBench lives in its own environment (it pins numpy<2 and transformers 4.33).
vbench-env: .venv-vbench/bin/python
.venv-vbench/bin/python: scripts/make_vbench_env.sh
	bash scripts/make_vbench_env.sh .venv-vbench

# Headless Chromium for the report's browser test (Debian package; Playwright drives it).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: setup vbench-env browser
	$(BIN)/python -m pytest -q

test-all: setup vbench-env browser
	$(BIN)/python -m pytest -q -m ''

lint: setup
	$(BIN)/ruff check sol tests benchmarks examples

clean:
	rm -rf $(VENV) .venv-vbench runs
