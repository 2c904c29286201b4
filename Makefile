# recdeploy: the two commands a newcomer runs (see README.md), plus benchmarks.
#   make demo   set up .venv and run the end-to-end demo on MovieLens-100k (CPU)
#   make test   set up .venv and run the whole test suite (unit + real tritonserver), ruff, mypy
#   make bench  performance benchmarks of every scenario (not part of the test suite)
#   make bench-large  the same on MovieLens-1M
#   make bench-criteo  large CTR: Criteo-format data, DLRM, compressed tables, per-variant memory
#   make bench-ann  ANN (FAISS) recall vs speed and the cost curve by catalogue size (docs/ann.md)
#   make bench-ann-served  the same served: exact + ANN settings behind tritonserver, 10^5..10^7
#   make soak   reliability soak against the demo's repository (not part of the test suite)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export RECDEPLOY_CACHE ?= $(CURDIR)/.cache/recdeploy
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test bench bench-large bench-ddp bench-loop bench-ann bench-ann-served soak clean

setup: $(STAMP)
	@sh serve/gateway_deps.sh   # nginx + openssl for `recdeploy gateway` (installs as root)

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

bench-ddp: setup   # recdeploy train on 1 process vs 2, interleaved rounds (minutes; docs/distributed-training.md)
	$(BIN)/python -m recdeploy.train.ddp_bench --model two_tower --epochs 1 --nproc 2 --rounds 2

bench: bench-ann

bench-ann: setup   # ANN vs exact: 10^5, 10^6 items + the real model; cost curve 10^4..10^6 (~1 h on 2 cores)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/recdeploy ann-bench --out reports/ann --sizes 100000,1000000 --max-nlist 1024 \
		--costs 10000,100000,1000000 --docs docs/ann.md

bench-ann-served: setup   # exact + ANN settings served side by side at 10^5, 10^6, 10^7 items (~35 min, ~18 GB)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m recdeploy.perf.ann_served_sweep --out reports/ann_served \
		--sizes 100000,1000000 --docs docs/ann.md
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m recdeploy.perf.ann_served_sweep --out reports/ann_served \
		--sizes 10000000 --keep --docs docs/ann.md

bench-large: setup   # the same on MovieLens-1M (trains what is missing: tens of minutes on 2 cores)
	$(BIN)/recdeploy bench --dataset ml-1m --out reports/bench-ml1m

.PHONY: bench-criteo
bench-criteo: setup   # large CTR: one epoch of 10^7 Criteo-format rows, 1.3 x 10^7 x 64 embedding rows, then
                      # FP32 / INT8 / INT4 / mixed exported, measured and served (~35 min on 2 cores, ~12 GB
                      # RAM); `recdeploy bench-criteo --preset small --serve` is the minutes-long one
	$(BIN)/recdeploy bench-criteo --preset full --quick-grid --serve --out reports/bench-criteo-full

bench-loop: setup   # the online loop replayed: 8 days of ML-100k as feedback, daily update + hot swap
                    # (needs Redis at 127.0.0.1:6379; ~20 min on 2 cores); see docs/online-loop.md
	$(BIN)/recdeploy replay --dataset ml-100k --days 8 --served --out reports/replay

soak: setup    # after `make demo`: 60 s at concurrency 64, memory growth bounded, zero failures
	$(BIN)/recdeploy soak --repository model_repository

bench-gateway: setup   # after `make demo`: 2 replicas behind the nginx gateway: its cost, 2 vs 1 replicas,
                       # a rolling update under perf_analyzer, a replica killed under load (minutes)
	$(BIN)/recdeploy gateway-bench --repository model_repository --out reports/gateway
.PHONY: bench-gateway

clean:
	rm -rf $(VENV) runs reports
