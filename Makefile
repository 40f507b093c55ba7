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

# A chapter's live widget in a real browser (not part of `make test` or CI): JupyterLab in headless
# Chromium runs the chapter, moves a slider and checks that the figure changes. Installs
# Playwright (pip; its Python package only) and Debian's chromium (apt) when they are missing.
# CHAPTER=01-ddpm picks another chapter; CHROMIUM=/path/to/chromium another browser.
.PHONY: browser-check
CHROMIUM ?= /usr/bin/chromium
browser-check: $(STAMP)
	$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/pip install --quiet playwright
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null 2>&1 || { echo "browser-check: no \
	Chromium at $(CHROMIUM) and no apt-get to install it: install Chromium, then run make \
	browser-check CHROMIUM=/path/to/chromium"; exit 1; }; \
	SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); echo "browser-check: installing chromium (apt)"; \
	$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }
	$(BIN)/python -m bench.browser_check --chromium $(CHROMIUM) $(if $(CHAPTER),--chapter $(CHAPTER))
