# HALP developer commands.  `make run` and `make test` are the two commands of
# README.md's Quick start; both create .venv and install what they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Extra arguments for `make run`, e.g. make run ARGS="--port 7101 --store memory"
ARGS   ?=
# `make run` is a local try-out server: it takes private and documentation
# addresses, unchecked.  `make run TRYOUT=` applies a public server's rules
# (docs/security.md).
TRYOUT ?= --allow-private --verify none

.PHONY: install run test typecheck docs unit e2e clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; sys.exit("HALP needs Python 3.10 or later") if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,docs]' --config-settings editable_mode=compat
	touch $(STAMP)

install: $(STAMP)

# Serve HALP/1 on TCP port 7100 with the SQLite store halp.sqlite3.
run: $(STAMP)
	$(BIN)/twistd --nodaemon --pidfile= halp $(TRYOUT) $(ARGS)

# Everything CI checks: types, docs, unit tests, end-to-end tests.
test: typecheck docs unit e2e

typecheck: $(STAMP)
	$(BIN)/mypy

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

unit: $(STAMP)
	$(BIN)/trial halp

e2e: $(STAMP)
	$(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) docs/_build _trial_temp .mypy_cache .pytest_cache .hypothesis
