# DAIM Kit. `make demo` = set up + run the notebook sequence on the demo data;
# `make test` = set up + unit tests + the notebooks under nbval.
PY := .venv/bin/python
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: setup demo notebooks test unit nbval lint bench clean-runs

setup:
	bash scripts/setup.sh

demo: setup notebooks

notebooks:
	$(PY) scripts/run_notebooks.py $(NOTEBOOKS)

test: setup unit nbval

unit:
	$(PY) -m pytest -q tests

nbval:
	cd notebooks && ../$(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
		--nbval-sanitize-with nbval_sanitize.cfg --nbval-cell-timeout 900 $(notdir $(NOTEBOOKS))

lint:
	.venv/bin/ruff check daimlib tests benchmarks scripts

bench: setup
	$(PY) -m daimlib bench

clean-runs:
	rm -rf runs data/demo
