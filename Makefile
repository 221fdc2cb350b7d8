# The two quick-start commands: `make repro` (set up, run the pipeline) and `make test`.
VENV ?= .venv
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup repro test lint browser mutation

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[pipeline,test]'
	touch $@

setup: $(VENV)/.installed

repro: setup
	dvc repro

# Browser tests drive Debian's Chromium; install it when it is missing (needs root).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)

lint: setup
	ruff check .
	ruff format --check .

# pytest exits 5 when it collects nothing; that is a failure of the suite, not a pass.
test: setup browser lint
	pytest

# Mutation testing (about 20 min on 2 cores; not part of `make test`): per-module kill rates.
mutation: setup
	$(VENV)/bin/pip install --quiet -e '.[mutation]'
	scripts/mutation.sh
