# `make study` sets everything up and runs the study; `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STUDY_OUT ?= runs/study
DEBIAN_DATA := dataset-fashion-mnist

# What the tests need from the system besides the data: a C++ compiler (torch.compile), Chromium
# (the page tests) and PostgreSQL (the sweep tests on a shared database).
TEST_PACKAGES := g++ chromium postgresql
TEST_PROGRAMS := g++ /usr/bin/chromium
.PHONY: setup data test-deps study test lint bench docs lab triton clean
TRITON := $(VENV)/triton

$(BIN)/fmnist: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[serve,sweep,audit,track,test,dev,notebooks,docs,openvino,triton]'
	touch $@

setup: $(BIN)/fmnist

# Triton's server from the nvidia-pytriton wheel, for the server alone: its files (tritonserver, the
# Python backend and its stubs) under .venv/triton, without its Python package, whose NumPy < 2 pin
# fmnist's environment cannot take. `fmnist serve --engine triton` finds it there; the Python
# backend then runs fmnist's own interpreter and packages (NumPy, ONNX Runtime).
$(TRITON)/pytriton/tritonserver/bin/tritonserver: constraints.txt | $(BIN)/fmnist
	$(BIN)/pip install --quiet --no-deps --upgrade --target $(TRITON) -c constraints.txt nvidia-pytriton
	touch $@

triton: $(TRITON)/pytriton/tritonserver/bin/tritonserver

# Find or download the data; failing that, install Debian's package where apt and root allow.
data: setup
	@$(BIN)/fmnist data --quiet || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing the Debian package $(DEBIAN_DATA)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_DATA) >/dev/null \
	      && $(BIN)/fmnist data --quiet; \
	  else \
	    echo "no Fashion-MNIST data: run 'sudo apt-get install $(DEBIAN_DATA)' or set FMNIST_DATA_DIR" >&2; exit 1; \
	  fi; }

# Install what the tests need where root and apt allow; elsewhere stop at once, naming it.
test-deps:
	@missing=""; for p in $(TEST_PROGRAMS); do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing pg_ctl"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing the Debian packages $(TEST_PACKAGES) for the tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_PACKAGES) >/dev/null; \
	  else \
	    echo "the tests need$$missing: run 'sudo apt-get install $(TEST_PACKAGES)'" >&2; exit 1; \
	  fi; \
	fi

study: data
	$(BIN)/fmnist study --out $(STUDY_OUT) --overwrite

# Two test processes: many tests wait on subprocesses, servers and torchrun, so two keep both cores
# busy. Each module runs whole on one of them (its fixtures made once), the longest first (conftest).
test: data test-deps lint triton
	$(BIN)/pytest -q -n 2 --dist loadscope

lint: setup
	$(BIN)/ruff format --check src tests benchmarks docs examples
	$(BIN)/ruff check src tests benchmarks docs examples

# The documentation site, into site/ (--strict: a broken link or reference fails the build).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The example notebooks in JupyterLab, on this machine only (the `lab` extra, installed on first use).
lab: setup
	@$(BIN)/python -c "import jupyterlab" 2>/dev/null || $(BIN)/pip install --quiet -c constraints.txt -e '.[lab]'
	$(BIN)/jupyter lab --ip 127.0.0.1 --notebook-dir examples

bench: data
	$(BIN)/fmnist bench --json BENCHMARKS.json

# Keeps runs/ and sweeps/: trained models are the user's, not build output.
clean:
	rm -rf $(VENV) build site src/*.egg-info .pytest_cache .hypothesis
