# Two entry points for people: `make lab` (the main job) and `make test`.
# Both create .venv and install everything they need, system packages included.
# Run them as yourself: the checkout and .venv stay yours. Only the steps that need
# root (apt-get, network namespaces, the tests of both) go through $(SUDO), which is
# empty as root (a container, CI) and when there is no sudo (the lab then falls back
# to an unprivileged user namespace). Those steps keep their bytecode, pytest cache
# and hypothesis database out of the checkout, and the lab gives the files it writes
# back to the user who ran sudo, so nothing root-owned is left behind.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
SUDO   ?= $(if $(filter 0,$(shell id -u)),,$(if $(shell command -v sudo),sudo))
SCRATCH = $${TMPDIR:-/tmp}/peerwatch-$$(id -u)
AS_ROOT = $(SUDO) env PYTHONPYCACHEPREFIX=$(SCRATCH)/pycache \
	HYPOTHESIS_STORAGE_DIRECTORY=$(SCRATCH)/hypothesis

.PHONY: lab test check bench compiled bench-compiled system-deps clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $@

system-deps:
	$(SUDO) bash tools/system-deps.sh

# Both scenario sets: the TCP puzzles, then the real servers and drivers (DRIVER_ARGS for those);
# the status is the worse of the two.
lab: $(VENV)/.installed system-deps
	$(AS_ROOT) $(VENV)/bin/peerwatch lab $(ARGS); a=$$?; \
	$(AS_ROOT) $(VENV)/bin/peerwatch lab --drivers $(DRIVER_ARGS); b=$$?; \
	exit $$(( a > b ? a : b ))

check: $(VENV)/.installed
	$(PY) -m ruff check
	$(PY) -m ruff format --check
	$(PY) -m mypy

test: $(VENV)/.installed system-deps check
	$(AS_ROOT) $(PY) -m pytest -q -p no:cacheprovider $(ARGS)

bench: $(VENV)/.installed system-deps
	$(PY) -m bench $(ARGS)

# The optional mypyc-compiled core, as a copy of the package in build/compiled (the
# installed package stays pure; `PEERWATCH_COMPILE=1 pip install .` installs it compiled),
# and the per-message cost of the pure and the compiled core side by side. With
# build/compiled present, `python -m bench throughput` also measures it.
compiled: $(VENV)/.installed
	$(PY) tools/compile_core.py build/compiled

bench-compiled: compiled
	$(PY) -m bench.tp_core
	PYTHONPATH=build/compiled $(PY) -m bench.tp_core

clean:
	rm -rf $(VENV) build dist .mypy_cache .pytest_cache .ruff_cache .hypothesis
