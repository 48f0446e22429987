# DAIM Kit. `make demo` = set up + run the notebook sequence on the demo data into ignored folders;
# `make test` = set up + lint + unit tests + the notebooks under nbval + the smoke run on F30K-layout data + the book; `make test-fast` = the fast tests only.
PY := .venv/bin/python
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
# where `make demo` writes (ignored by git): executed notebooks, figures and runs (DAIM_OUTPUT_DIR)
DEMO_OUT := runs/executed

.PHONY: setup demo notebooks refresh-notebooks editions book test test-fast unit nbval smoke lint bench clean-runs

setup:
	bash scripts/setup.sh

# a student's set-up: the kit with the notebook extra only (no test or lint tools), then the notebooks
demo:
	DAIM_SETUP_EXTRAS=notebook bash scripts/setup.sh
	$(MAKE) notebooks

# a student's clone stays clean: executed copies, figures and runs all go under $(DEMO_OUT)
notebooks:
	DAIM_OUTPUT_DIR=$(DEMO_OUT) $(PY) scripts/run_notebooks.py --out $(DEMO_OUT)/notebooks $(NOTEBOOKS)
	@echo "[demo] executed notebooks: $(DEMO_OUT)/notebooks/, figures: $(DEMO_OUT)/figures/, runs: $(DEMO_OUT)/runs/ (ignored by git)"

# maintainers: re-execute the committed notebooks in place and rewrite the tracked figures/
refresh-notebooks: setup
	$(PY) scripts/run_notebooks.py $(NOTEBOOKS)
	@echo "[refresh-notebooks] notebooks/ and figures/ rewritten; review with git diff before committing"

# teachers: a student edition (solutions cut, outputs cleared) and a teacher edition of the notebooks
editions:
	$(PY) scripts/editions.py --out runs/editions

# the course book: the committed notebooks (never executed here) as a static HTML site in runs/book/
book:
	$(PY) scripts/build_book.py --out runs/book

test: setup lint unit nbval smoke book

# two test processes (pytest-xdist; a test file stays in one), one torch thread each: 2 cores kept busy
# without oversubscribing them (6.3 min instead of 10 on 2 cores); UNIT_JOBS=1 runs them one after another
UNIT_JOBS ?= 2
unit:
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(UNIT_JOBS) --dist loadfile -p no:nbval tests

# the inner loop: every test not marked slow or docs, in two processes like `unit` (CI runs them all there);
# about 50 s on 2 cores. nbval stays unloaded here and in `unit` (the notebooks have their own target)
test-fast:
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(UNIT_JOBS) --dist loadfile -m "not slow and not docs" -p no:nbval tests

# smoke run (CI; a first try of a new dataset): notebooks 00-10 under papermill with SMOKE=True, PRESET="tiny"
# on a generated Flickr30K-layout folder; executed copies in runs/smoke/executed; fails if git status changes
SMOKE_DATA := runs/smoke/data/f30k_like
smoke:
	$(PY) -m daimlib make-f30k-like --root $(SMOKE_DATA) --quiet
	$(PY) scripts/run_notebooks.py --smoke --preset tiny --data $(SMOKE_DATA) --out runs/smoke/executed \
		$(filter notebooks/0%,$(NOTEBOOKS)) $(filter notebooks/10_%,$(NOTEBOOKS))

# outputs (figures, runs) under runs/nbval, so that `make test` leaves the tracked figures/ as committed
nbval:
	cd notebooks && DAIM_OUTPUT_DIR=runs/nbval ../$(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
		--nbval-sanitize-with nbval_sanitize.cfg --nbval-cell-timeout 1500 $(notdir $(NOTEBOOKS))

lint:
	.venv/bin/ruff check daimlib tests benchmarks scripts experiments
	.venv/bin/ruff format --check daimlib tests benchmarks scripts experiments

bench: setup
	$(PY) -m daimlib bench

clean-runs:
	rm -rf runs data/demo
