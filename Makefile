# Fustor developer entry points. `make demo` and `make test` install what they need first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.fustor-installed
# Debian packages: FUSE (runtime + headers to build pyfuse3), a compiler and Python headers,
# and the tools the tests and the demo use (bindfs, getfattr from attr, tree, curl).
APT_PACKAGES := fuse3 libfuse3-dev pkg-config gcc libc6-dev python3 python3-dev python3-venv \
                bindfs attr tree curl ca-certificates
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The first interpreter >= 3.11 on PATH (override: make install PYTHON=python3.12).
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do \
            command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            2>/dev/null && { echo $$p; break; }; done)

DIR ?=
MNT ?=
ARGS ?=

.PHONY: help install system-deps demo test test-long bench lint typecheck check clean

help:
	@echo "make demo       run Fusion + agent + mount on a sample tree (DIR=..., MNT=...)"
	@echo "make test       run the test suite (make test-long adds the long-form tests)"
	@echo "make bench      run the benchmarks (bench/run.py)"
	@echo "make lint       ruff;  make typecheck: mypy --strict;  make check: all three"
	@echo "make install    Debian packages, .venv, editable install of .[all,dev]"

install: system-deps $(STAMP)

# Only the missing packages are installed, so this is quick (and needs no root) when done.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' \
	    || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@[ -e /dev/fuse ] || echo "warning: /dev/fuse is missing: the mount and its tests need it (modprobe fuse)" >&2

$(BIN)/python:
	@[ -n "$(PYTHON)" ] || { echo "error: Python >= 3.11 not found (set PYTHON=...)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-run pip only when pyproject.toml changed since the last successful install.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	@touch $@

demo: install
	$(BIN)/python -m fustor.demo $(if $(DIR),--dir '$(DIR)') $(if $(MNT),--mnt '$(MNT)') $(ARGS)

test: install
	$(BIN)/pytest -q $(ARGS)

test-long: install
	$(BIN)/pytest -q --long $(ARGS)

bench: install
	$(BIN)/python bench/run.py $(ARGS)

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .work
