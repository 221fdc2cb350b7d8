# The two quick-start commands: `make repro` (set up, run the pipeline) and `make test`.
VENV ?= .venv
# The serving install alone (no torch, no DVC), where the serving tests run a second time.
SERVING_VENV ?= .venv-serving
PYTHON ?= python3
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup repro test test-main test-long test-serving lint browser mutation

# constraints.txt pins every package to the versions the recorded run was made with.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[pipeline,ray,test]'
	touch $@

$(SERVING_VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(SERVING_VENV)
	$(SERVING_VENV)/bin/pip install --quiet --upgrade pip
	$(SERVING_VENV)/bin/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# The run's data and models go to the default DVC remote, so `dvc pull` gets them elsewhere.
repro: setup
	dvc repro
	dvc push

# Browser tests drive Debian's Chromium; install it when it is missing (needs root).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)

lint: setup
	ruff check .
	ruff format --check .

# Serve and score with the base install only; its `digits` comes first on PATH. The slow tests
# (Ray, the long schemathesis run) already ran in .venv and need nothing the base install lacks.
test-serving: $(SERVING_VENV)/.installed browser
	@$(SERVING_VENV)/bin/python -c 'import importlib.util as u, sys; \
		sys.exit("torch is in the serving install" if u.find_spec("torch") else 0)'
	PATH=$(abspath $(SERVING_VENV))/bin:$$PATH $(SERVING_VENV)/bin/python -m pytest \
		-p no:cacheprovider -m 'not slow' tests/digits tests/serving

# Three processes at once, each output printed whole as it ends; make fails if any fails. The
# `long` tests (the 1,000-example schemathesis run: one busy core for ~8 min, schemathesis is
# single-threaded) run beside the rest and the serving install's run instead of after them.
# pytest exits 5 when it collects nothing; that is a failure of the suite, not a pass.
test: setup browser lint
	$(MAKE) -j3 --output-sync=target test-main test-long test-serving

test-main: setup
	pytest -m 'not long'

test-long: setup
	pytest -p no:cacheprovider -m long

# Mutation testing (about 20 min on 2 cores; not part of `make test`): per-module kill rates.
mutation: setup
	$(VENV)/bin/pip install --quiet -e '.[mutation]'
	scripts/mutation.sh
