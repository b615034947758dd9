# Two commands do everything on a fresh Debian machine (as root):
#   make demo   — install, build, and run the main job: a lab school filtered live by the daemon
#   make test   — install, build, and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo test bench fuzz-asan clean

$(STAMP): pyproject.toml setup.py src/edufilter/*.pyx src/edufilter/*.pxd src/edufilter/_hash.h packaging/apt-packages.txt
	scripts/install-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=69" wheel "Cython>=3.0.10,<4"
	$(BIN)/python -m pip install -q --no-build-isolation -e ".[test,fuzz]"
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/python -m edufilter.lab.demo

test: setup
	$(BIN)/pytest

bench: setup
	$(BIN)/pytest bench --benchmark-only --benchmark-json=bench/results/fastpath.json -q
	$(BIN)/python bench/summary.py bench/results/fastpath.json

fuzz-asan: setup
	scripts/fuzz-asan.sh

clean:
	rm -rf build $(VENV) src/edufilter/_fastpath.c src/edufilter/*.so
