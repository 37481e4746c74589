# Two commands on a fresh machine:  make run   (the whole job on the embedded corpus)
#                                   make test  (the whole test suite)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=

.PHONY: install run test test-fast bench lint params ui serve clean

# torch goes in first, pinned: an unpinned torch pulls a CUDA build of several GB, while
# torch==2.13.0 is a CPU build that pip takes from local disk here in seconds.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m jobs.run $(ARGS)

# Two workers (pytest-xdist), each module whole on one of them (module fixtures start once): much of the
# suite waits on subprocesses, servers and Ray actors, so two streams fill the 2 cores better than one.
# --no-loadscope-reorder: hand out modules in collection order, which tests/conftest.py sorts slow-first
# (xdist's default reorders them by test count, so a module with one long test started last).
test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder $(ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not integration" $(ARGS)

# -m: run as scripts, bench/pipeline.py would shadow the `pipeline` package for its neighbours.
bench: install
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.files
	$(BIN)/python -m bench.file_parts
	$(BIN)/python -m bench.train
	$(BIN)/python -m bench.quality

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

params: install
	$(BIN)/python -m jobs.params --seed-variants

# The MLflow UI on the store `make run` writes (the summary prints the run page's link on this port).
ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath outputs/mlflow.db) --port 5000

# The champion over HTTP. PATH: `mlflow models serve` starts `uvicorn` by name, which is only on the
# venv's PATH (without it: `exec: uvicorn: not found`).
serve: install
	PATH=$(abspath $(BIN)):$$PATH MLFLOW_TRACKING_URI=sqlite:///$(abspath outputs/mlflow.db) \
	  $(BIN)/mlflow models serve -m models:/rnn-textcls@champion --env-manager local --port 5001

clean:
	rm -rf outputs mlruns .pytest_cache
