# DAIM Kit. `make demo` = set up + run the notebook sequence on the demo data;
# `make test` = set up + unit tests + the notebooks under nbval.
PY := .venv/bin/python
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))

.PHONY: setup demo notebooks test unit nbval lint bench clean-runs smoke

setup:
	bash scripts/setup.sh

demo: setup notebooks

notebooks:
	$(PY) scripts/run_notebooks.py $(NOTEBOOKS)

test: setup unit nbval

unit:
	$(PY) -m pytest -q tests

# smoke run (CI; a first try of a new dataset): notebooks 00-10 under papermill with SMOKE=True, PRESET="tiny"
# on a generated Flickr30K-layout folder; executed copies in runs/smoke/executed; fails if git status changes
SMOKE_DATA := runs/smoke/data/f30k_like
smoke:
	$(PY) -m daimlib make-f30k-like --root $(SMOKE_DATA) --quiet
	$(PY) scripts/run_notebooks.py --smoke --preset tiny --data $(SMOKE_DATA) --out runs/smoke/executed \
		$(filter notebooks/0%,$(NOTEBOOKS)) $(filter notebooks/10_%,$(NOTEBOOKS))

nbval:
	cd notebooks && ../$(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
		--nbval-sanitize-with nbval_sanitize.cfg --nbval-cell-timeout 900 $(notdir $(NOTEBOOKS))

lint:
	.venv/bin/ruff check daimlib tests benchmarks scripts

bench: setup
	$(PY) -m daimlib bench

clean-runs:
	rm -rf runs data/demo
