PYTHON ?= python3

.PHONY: install test run bench

install:
	$(PYTHON) -m pip install -q -e '.[test]'

# The whole suite, in parallel: each test runs its own dynosim on its own ports.
test: install
	$(PYTHON) -m pytest -n auto -q

run: install
	dynosim run -C fixtures/sample

bench: install
	$(PYTHON) bench/run_all.py
