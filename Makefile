# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
EXTRAS := ibm,braket,kme,notebooks,sweep,test

.PHONY: demo test test-all bench validation clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

## A full BB84 round on the embedded defaults (Aer simulator), with a little channel noise.
demo: $(STAMP)
	$(BIN)/qkd run --exchanges 200000 --noise depolarizing:0.04 --distance-km 10

## The default suite (slow studies excluded); doctests and notebooks included.  One worker per
## core (pytest-xdist).  worksteal: an idle worker takes tests from the other's queue, so the
## suite ends together on both cores; a module fixture may then be computed on both workers.
## Measured on 2 cores, fresh clone (2026-12-02): 235 s of test time, 1,619 tests; the notebooks
## write their executed HTML and wall times to build/notebooks/ (CI keeps that folder).
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" --durations=15 -n $(JOBS) --dist worksteal

## Everything, slow statistical studies too.
test-all: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	for b in import_time throughput cascade amplification session authentication kme_load decoy sweep node_rate protocols; do $(BIN)/python benchmarks/$$b.py || exit 1; done
	$(BIN)/python benchmarks/validation.py --fast

## Published figures recomputed, every row (minutes: the finite-key rows optimise rate curves);
## rewrites docs/validation.md.
validation: $(STAMP)
	$(BIN)/python benchmarks/validation.py --markdown docs/validation.md

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
