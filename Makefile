# One command per job; identical locally and in CI (.ci/run calls `make test`).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt system-packages.txt system-packages-nonfree.txt 2>/dev/null | md5sum | cut -c1-10)
PYTEST_ARGS ?=

.PHONY: install system-deps test test-slow lint style smoke bench demo clean

install: $(STAMP)

# Idempotent: installs missing Debian packages, creates the venv once, re-installs when the
# dependency files change (the stamp name is their hash).
$(STAMP): pyproject.toml constraints.txt system-packages.txt
	bash scripts/install-system.sh system-packages.txt
	bash scripts/install-nonfree.sh system-packages-nonfree.txt  # corpus: pico voices (JEPATOK_NO_NONFREE=1 skips)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,eval,corpus]'
	# [eval] resemblyzer without its sdist-only `webrtcvad` dependency (webrtcvad-wheels provides the module)
	$(BIN)/python -m pip install -q -c constraints.txt --no-deps resemblyzer
	rm -f $(VENV)/.installed-*
	touch $@

test: install
	$(BIN)/python -m pytest -q -m "not slow and not gpu" $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -q -m "slow" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check jepatok tests
	$(BIN)/ruff format --check jepatok tests

style: install
	$(BIN)/ruff format jepatok tests
	$(BIN)/ruff check --fix jepatok tests

bench: install
	$(BIN)/jepatok bench

# The whole mission with the shipped `small` checkpoints (jepatok/pretrained/small), offline, < 10 min on 2 cores.
demo: install
	$(BIN)/python -m jepatok.demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
