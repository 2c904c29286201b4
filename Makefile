# recdeploy: the two commands a newcomer runs (see README.md), plus benchmarks.
#   make demo   set up .venv and run the end-to-end demo on MovieLens-100k (CPU)
#   make test   set up .venv and run the whole test suite (unit + real tritonserver), ruff, mypy
#   make bench  performance benchmarks of every scenario (not part of the test suite)
#   make bench-large  the same on MovieLens-1M
#   make bench-ann  ANN (FAISS) recall vs speed and the cost curve by catalogue size (docs/ann.md)
#   make soak   reliability soak against the demo's repository (not part of the test suite)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export RECDEPLOY_CACHE ?= $(CURDIR)/.cache/recdeploy
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test bench bench-large bench-ann soak clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=23.2"
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: setup
	$(BIN)/recdeploy demo --dataset ml-100k --out runs/demo

test: setup   # the suite, then lint and type checks (config in pyproject.toml)
	$(BIN)/python -m pytest tests
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: setup   # every scenario's entries served vs in-process over HTTP (trains the short runs it
               # needs), catalogue scale; rewrites the generated tables of docs/performance.md
	$(BIN)/recdeploy bench --out reports/bench --docs docs/performance.md

bench: bench-ann

bench-ann: setup   # ANN vs exact: 10^5, 10^6 items + the real model; cost curve 10^4..10^6 (~1 h on 2 cores)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/recdeploy ann-bench --out reports/ann --sizes 100000,1000000 --max-nlist 1024 \
		--costs 10000,100000,1000000 --docs docs/ann.md

bench-large: setup   # the same on MovieLens-1M (trains what is missing: tens of minutes on 2 cores)
	$(BIN)/recdeploy bench --dataset ml-1m --out reports/bench-ml1m

soak: setup    # after `make demo`: 60 s at concurrency 64, memory growth bounded, zero failures
	$(BIN)/recdeploy soak --repository model_repository

clean:
	rm -rf $(VENV) runs reports
