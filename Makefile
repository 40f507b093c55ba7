# diffnotes: `make book` builds the rendered book, `make test` runs every test and notebook.
# Both create .venv and install everything on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2
# Torch first, as the CPU build: an unpinned torch pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
# Notebooks under test run headless, so widgets draw their static figure (as in the book): with
# ipywidgets' comm traffic nbclient now and then misses a reply and idles for the whole cell
# timeout before it finds it (15 s stalls with a 15 s timeout in a stress run, 300 s in make test).
NBENV  := DIFFNOTES_PROFILE=ci DIFFNOTES_STATIC=1 OMP_NUM_THREADS=1

.PHONY: install test unit notebooks book book-ci lint format clean bench strip claims

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

unit: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(JOBS) tests/

notebooks: $(STAMP)
	$(NBENV) $(BIN)/python -m pytest -n $(JOBS) --nbmake --nbmake-timeout=300 $(NOTEBOOKS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(NBENV) $(BIN)/python -m pytest -n $(JOBS) tests/ --nbmake --nbmake-timeout=300 $(NOTEBOOKS)

book: $(STAMP)
	$(BIN)/python -m diffnotes.book build

book-ci: $(STAMP)
	DIFFNOTES_PROFILE=ci $(BIN)/python -m diffnotes.book build

# every claim of every chapter over seeds and thread counts, each run with an empty model cache
CLAIMS_PROFILE ?= ci
SEEDS   ?= 0 1 2 3 4
THREADS ?= 1 2
claims: $(STAMP)
	$(BIN)/python -m bench.claims --profile $(CLAIMS_PROFILE) --seeds $(SEEDS) --threads $(THREADS)

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m bench.samplers
	OMP_NUM_THREADS=1 $(BIN)/python -m bench.train

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf _build .jupyter_cache

strip: $(STAMP)
	$(BIN)/python -m diffnotes.book strip notebooks/*.ipynb $(wildcard book/*.ipynb)
