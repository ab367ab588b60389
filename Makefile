# galleryflow: `make demo` runs the whole job on generated sample sets;
# `make test` runs the whole suite. Both create .venv and install what they need,
# exactly the versions in requirements.lock (the ones CI tested).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check
STAMP  := $(VENV)/.galleryflow-installed
LOCK   := requirements.lock

# torch comes first, on its own: `pip install torch==2.13.0` takes the CPU wheel
# (a bare `torch` from PyPI is a CUDA build that pulls several GB of nvidia-*
# packages). It is the one package the lock leaves out (see `lock`).
TORCH  := torch==2.13.0
# pyiqa is locked but installed without its declared dependencies (~1.3 GB of
# extras BRISQUE never imports); the `ai` extra carries what its BRISQUE path needs.
PYIQA  := pyiqa==0.1.16
# The lock's own tool, pinned too.
PIP_TOOLS := pip-tools==7.6.2

# `make test-latest`: a second venv with the newest versions the ranges in
# pyproject.toml allow (no lock), running the tests of everything that talks to
# Prefect's server: the review gate, the UI form, schedules and deployments, and the
# global concurrency limits the chunks queue for.
# `make test-latest LATEST=.venv-oldest LATEST_PINS="prefect==3.8.8"` runs the same
# tests on other versions the ranges allow (the oldest Prefect, say).
LATEST      ?= .venv-latest
LATEST_PINS ?=
LATEST_TESTS := tests/test_gate_flow.py tests/test_review_ui.py tests/test_schedule.py \
                tests/test_deployments_spec.py tests/test_ops_server.py \
                tests/test_concurrency_limits.py tests/test_prefect_heartbeats.py

.PHONY: install demo test test-fast test-latest lock bench clean

install: $(STAMP)

# --no-deps: the lock already lists every package, hashed (--require-hashes); pip
# resolves nothing, so a fresh install is byte for byte what `make test` ran.
$(STAMP): pyproject.toml $(LOCK) Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q --no-deps --require-hashes -r $(LOCK)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

demo: $(STAMP)
	$(BIN)/galleryflow demo --approve-all

# The layers contract first (seconds): a module importing upward fails the build.
# Then the project's own bytecode, once: with PYTHONDONTWRITEBYTECODE set (this
# project's machines set it), every process the tests start would otherwise compile
# galleryflow, flows, tasks and blocks from source again (~0.5 s each).
test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m compileall -q galleryflow flows tasks blocks >/dev/null
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m compileall -q galleryflow flows tasks blocks >/dev/null
	$(BIN)/python -m pytest -m "not integration"

test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip --disable-pip-version-check install -q -e ".[test]" $(LATEST_PINS)
	$(LATEST)/bin/python -m pip --disable-pip-version-check list 2>/dev/null \
	  | grep -iE '^(prefect|fastapi|pydantic|sqlalchemy|uvicorn|starlette|httpx) '
	$(LATEST)/bin/python -m pytest -p no:cacheprovider $(LATEST_TESTS)

# Refresh the lock: the newest versions the ranges allow, every one hashed. The
# resolver must see the CPU torch wheel (this machine's pip config finds it; elsewhere
# add PyTorch's CPU index to PIP_EXTRA_INDEX_URL), or torch's CUDA packages end up in
# the lock; the check below refuses that.
lock:
	test -x .venv-lock/bin/python || $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip --disable-pip-version-check install -q "$(PIP_TOOLS)"
	.venv-lock/bin/pip-compile --quiet --upgrade --generate-hashes --strip-extras \
	  --no-emit-index-url --no-emit-find-links \
	  --unsafe-package torch --unsafe-package galleryflow \
	  --extra ai --extra test -o $(LOCK) pyproject.toml
	! grep -qE '^nvidia-' $(LOCK) || { echo "the lock holds CUDA packages: the resolver did not see the CPU torch wheel" >&2; exit 1; }
	rm -rf .lock-pyiqa && .venv-lock/bin/python -m pip --disable-pip-version-check download -q --no-deps -d .lock-pyiqa "$(PYIQA)"
	{ printf '\n# Installed like every line here, with --no-deps (its declared dependencies are not needed).\n%s' "$(PYIQA)"; \
	  for f in .lock-pyiqa/*; do printf ' \\\n    --hash=sha256:%s' "$$(sha256sum "$$f" | cut -d' ' -f1)"; done; echo; } >> $(LOCK)
	rm -rf .lock-pyiqa

bench: $(STAMP)
	$(BIN)/python bench/intake.py --images 120
	$(BIN)/python bench/intake.py --images 12 --rounds 7
	$(BIN)/python bench/small_photos.py
	$(BIN)/python bench/batch_cli.py
	$(BIN)/python bench/scoring.py
	$(BIN)/python bench/captioning.py
	$(BIN)/python bench/batch.py

clean:
	rm -rf $(VENV) $(LATEST) .venv-lock .galleryflow .pytest_cache
