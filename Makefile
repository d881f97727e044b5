# `make study` sets everything up and runs the study; `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STUDY_OUT ?= runs/study
DEBIAN_DATA := dataset-fashion-mnist

.PHONY: setup data study test bench clean

$(BIN)/fmnist: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[serve,sweep,test]'
	touch $@

setup: $(BIN)/fmnist

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

study: data
	$(BIN)/fmnist study --out $(STUDY_OUT) --overwrite

test: data
	$(BIN)/pytest -q

bench: data
	$(BIN)/fmnist bench --json BENCHMARKS.json

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache .hypothesis
