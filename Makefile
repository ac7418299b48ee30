# Two entry points for a fresh clone: `make demo` and `make test`.
# torch==2.13.0 is installed before anything that depends on it: an unpinned
# torch on a CPU-only machine resolves to a CUDA build of several GB.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed

.PHONY: demo test test-core test-distributed lint venv clinic trials bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[torch,lightning,tensorflow,jax,transformers,dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gradwatch demo --out gradwatch-demo

test: $(STAMP)  # one worker per core of a 2-core machine: the suite is single-threaded test by test
	$(PY) -m pytest -q -n 2 -m "not distributed"

test-distributed: $(STAMP)  # each test spawns 2 processes: one at a time
	$(PY) -m pytest -q -m distributed

test-core: $(STAMP)
	$(PY) -m pytest -q tests/core

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clinic: $(STAMP)
	$(PY) -m benchmarks.clinic

trials: $(STAMP)
	$(PY) -m benchmarks.trials

bench: $(STAMP)
	$(PIP) install -e ".[bench]"
	WANDB_SILENT=true $(PY) -m benchmarks.overhead --peers
	$(PY) -m benchmarks.scale

clean:
	rm -rf $(VENV) gradwatch-demo build *.egg-info
