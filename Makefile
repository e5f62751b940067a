# The two commands of the README: `make book` and `make test`. Both set up .venv from requirements.txt first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup browser book test unit model clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

browser:
	bash tools/install_browser.sh

book: setup
	bash tools/vendor_js.sh
	$(VENV)/bin/jupyter-book build .
	@echo "book: open _build/html/index.html"

test: setup browser
	$(PY) -m pytest

unit: setup
	$(PY) -m pytest tests

model: setup
	$(PY) -m secbook train

clean:
	rm -rf _build
