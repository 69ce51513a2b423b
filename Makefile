# The lab's entry points. Every target runs natively on Linux and creates .venv/ on first use.
# `make help` lists them.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO_HINT := run as root so make can apt-get it, or install it yourself: sudo apt-get install

.DEFAULT_GOAL := help
.PHONY: help venv demo-gdb test clean gdb

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)  ## create .venv/ and install the lab into it

gdb:  ## make sure gdb is installed (apt-get when root)
	@command -v gdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "lab: installing gdb with apt-get"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q gdb; \
	  else echo "lab: gdb is missing; $(SUDO_HINT) gdb" >&2; exit 5; fi; }

demo-gdb: $(STAMP) gdb  ## reproduce the ChromaDB fork deadlock, prove it, capture it with GDB
	$(PY) -m lab run chromadb-tokio --launcher fork --debugger gdb

test: $(STAMP) gdb  ## run the test suite
	$(PY) -m pytest -q

clean:  ## remove generated evidence (crash_dumps/*)
	find crash_dumps -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
