# galleryflow: `make demo` runs the whole job on generated sample sets;
# `make test` runs the whole suite. Both create .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.galleryflow-installed

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

# torch is installed first, pinned, from the CPU wheel: a bare `torch` requirement
# (from open_clip or pyiqa) would otherwise pull several GB of CUDA packages.
# constraints.txt keeps every later step from upgrading it.
$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check "torch==2.13.0"
	$(PIP) install -q --disable-pip-version-check -c constraints.txt -e ".[ai,test]"
	# pyiqa without its declared dependencies (~1.3 GB of extras BRISQUE never
	# imports); the `ai` extra carries what its BRISQUE path needs. pip cannot say
	# "--no-deps" in pyproject, hence this step. Version pinned in constraints.txt.
	$(PIP) install -q --disable-pip-version-check -c constraints.txt --no-deps pyiqa
	touch $@

demo: $(STAMP)
	$(BIN)/galleryflow demo --approve-all

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration"

bench: $(STAMP)
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/scoring.py
	$(BIN)/python bench/captioning.py
	$(BIN)/python bench/batch.py

clean:
	rm -rf $(VENV) .galleryflow .pytest_cache
