PYTHON ?= python3

.PHONY: install lint test run bench trials trials-short

install:
	$(PYTHON) -m pip install -q -e '.[test]'

# What .ci/run checks before the tests: lint, format and types (pyproject.toml says which rules, and why).
lint: install
	$(PYTHON) -m ruff check dynosim tests bench trials
	$(PYTHON) -m ruff format --check dynosim tests bench trials
	$(PYTHON) -m mypy

# The whole suite, in parallel: each test runs its own dynosim on its own ports; then the short trials.
test: install
	$(PYTHON) -m pytest -n auto -q --durations=15
	$(PYTHON) trials/run_all.py --short --seed 22

run: install
	dynosim run -C fixtures/sample

bench: install
	$(PYTHON) bench/run_all.py

# Issue 22's reliability trials: one table and trials.json at the repo root; a failure prints its seed and replay.
trials: install
	$(PYTHON) trials/run_all.py

# A few cases of each trial, under 3 minutes in all: what CI runs.
trials-short: install
	$(PYTHON) trials/run_all.py --short --seed 22
