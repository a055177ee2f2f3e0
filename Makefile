# Two entry points for people: `make lab` (the main job) and `make test`.
# Both create .venv and install everything they need, system packages included.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: lab test check bench system-deps clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $@

system-deps:
	bash tools/system-deps.sh

# Both scenario sets: the TCP puzzles, then the real servers and drivers (DRIVER_ARGS for those);
# the status is the worse of the two.
lab: $(VENV)/.installed system-deps
	$(VENV)/bin/peerwatch lab $(ARGS); a=$$?; \
	$(VENV)/bin/peerwatch lab --drivers $(DRIVER_ARGS); b=$$?; \
	exit $$(( a > b ? a : b ))

check: $(VENV)/.installed
	$(PY) -m ruff check
	$(PY) -m ruff format --check
	$(PY) -m mypy

test: $(VENV)/.installed system-deps check
	$(PY) -m pytest -q $(ARGS)

bench: $(VENV)/.installed system-deps
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) build dist .mypy_cache .pytest_cache .ruff_cache .hypothesis
