# Two commands do everything on a fresh Debian machine (as root):
#   make demo   — install, build, and run the main job: a lab school filtered live by the daemon
#   make test   — install, build, and run the whole test suite
#   make demo-hub — a school group: three NATS servers and three sites' gateways in namespaces
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup demo demo-hub test bench release-check fuzz-asan clean

$(STAMP): pyproject.toml lab/pyproject.toml setup.py $(wildcard src/edufilter/*.pyx src/edufilter/*/*.pyx src/edufilter/*.pxd src/edufilter/*/*.pxd src/edufilter/*.h) packaging/apt-packages.txt
	scripts/install-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip "setuptools>=69" wheel "Cython>=3.0.10,<4"
	$(BIN)/python -m pip install -q --no-build-isolation -e ".[test,fuzz,hub]"
	$(BIN)/python -m pip install -q --no-build-isolation -e lab
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/python -m edufilter_lab.demo

demo-hub: setup
	$(BIN)/python -m edufilter_lab.hub

test: setup
	$(BIN)/pytest

# make bench: every benchmark the machine supports (the end-to-end part needs root), raw
# pytest-benchmark JSON under bench/results/raw/, the summary bench/results/latest.json, a
# table and bench/results/latest.png. make release-check: the same, then fails on any missed target.
BENCH_STAMP := $(VENV)/.bench-stamp
BENCH_RAW := bench/results/raw/bench-$(shell date -u +%Y%m%dT%H%M%SZ).json

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q $$($(BIN)/python -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]))')
	touch $@

bench: setup $(BENCH_STAMP)
	mkdir -p bench/results/raw
	$(BIN)/pytest bench --benchmark-only --benchmark-json=$(BENCH_RAW) -q; status=$$?; \
		$(BIN)/python bench/summary.py build $(BENCH_RAW) && exit $$status

release-check: bench
	$(BIN)/python bench/summary.py check

fuzz-asan: setup
	scripts/fuzz-asan.sh

# every generated file: the C that Cython writes beside each .pyx, the built extensions, annotations
clean:
	rm -rf build $(VENV)
	find src -name '*.so' -delete
	for pyx in $$(find src -name '*.pyx'); do rm -f $${pyx%.pyx}.c $${pyx%.pyx}.html; done
