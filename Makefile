# recdeploy: the two commands a newcomer runs (see README.md), plus benchmarks.
#   make demo   set up .venv and run the end-to-end demo on MovieLens-100k (CPU)
#   make test   set up .venv and run the whole test suite (unit + real tritonserver)
#   make bench  performance benchmarks (not part of the test suite)
#   make soak   reliability soak against the demo's repository (not part of the test suite)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export RECDEPLOY_CACHE ?= $(CURDIR)/.cache/recdeploy
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test bench soak clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=23.2"
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: setup
	$(BIN)/recdeploy demo --dataset ml-100k --out runs/demo

test: setup
	$(BIN)/python -m pytest tests

bench: setup   # after `make demo`: every ensemble (and the fused libtorch model called directly)
               # served vs in-process over HTTP, plus catalogue scale
	$(BIN)/recdeploy perf --lab model_repository --protocol http --batch-size 1,64 \
	    --model recommend,recommend_fused,recommend_fused_libtorch,fused_retrieval_libtorch \
	    --concurrency 1,4,16,32,64 --scale 100000,1000000 --out reports/bench

soak: setup    # after `make demo`: 60 s at concurrency 64, memory growth bounded, zero failures
	$(BIN)/recdeploy serve soak --repository model_repository

clean:
	rm -rf $(VENV) runs reports
