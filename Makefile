# Etude: `make run` runs the quick-start experiment, `make test` the test suite. Both set
# themselves up on a fresh machine: a virtual environment in .venv, torch (CPU wheel) first.

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
# Where pip looks for torch. Empty: pip's configured index (on the development machines that
# holds the CPU wheel). Elsewhere plain PyPI serves a multi-GB CUDA build for torch==2.13.0: pass
# the CPU wheel index, `make run TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu`.
TORCH_INDEX_URL ?=
TORCH_INDEX_ARGS := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)

.PHONY: setup dev run test protos lint bench clean

# The C extension is built by `pip install -e .`: its source changing rebuilds it.
$(VENV)/.base: pyproject.toml setup.py services/loadgen/_timed_socket.c
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_INDEX_ARGS) $(TORCH_SPEC)
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PIP) install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.base
dev: $(VENV)/.dev

run: $(VENV)/.base
	$(VENV)/bin/etude run examples/quickstart.yaml

test: $(VENV)/.dev
	$(PY) -m pytest

# Regenerates etude/v1 from protos/; tests/test_protos.py fails when they disagree.
protos: $(VENV)/.dev
	rm -f etude/v1/*_pb2*.py etude/v1/*_pb2*.pyi etude/v1/etude.protoset
	$(PY) -m grpc_tools.protoc -I protos --python_out=. --pyi_out=. --grpc_python_out=. \
		--descriptor_set_out=etude/v1/etude.protoset --include_source_info protos/etude/v1/*.proto

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(VENV)/.dev
	$(PY) benchmarks/bench_workload.py
	$(PY) benchmarks/bench_inference.py
	$(PY) benchmarks/bench_loadgen.py

clean:
	rm -rf $(VENV) results .pytest_cache .mypy_cache .ruff_cache
