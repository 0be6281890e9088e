# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test bench clean fmnist-data bench-deps tcmalloc

setup: $(STAMP) fmnist-data tcmalloc

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,ray]'
	touch $(STAMP)

# Fashion-MNIST comes from Debian's package, never from a download at run time.
fmnist-data:
	@test -f $(FMNIST) || { $(SUDO) apt-get update -q && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist; }

# tcmalloc: the command line re-runs itself under it when present (cli.use_fast_allocator; SAPF on
# Lite0 ran 1.9x faster on CPU than under glibc's malloc). Optional: without it nothing changes.
tcmalloc:
	@ls /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 >/dev/null 2>&1 || { $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1 || { $(SUDO) apt-get update -q >/dev/null 2>&1 && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -q libtcmalloc-minimal4 >/dev/null 2>&1; } || echo "libtcmalloc-minimal4 not installed: the system allocator is used"; }

demo: setup
	$(VENV)/bin/sparseattack demo

test: setup
	$(PY) -m pytest -q tests

bench-deps: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m pip install -q --no-deps adv-lib torchattacks

bench: bench-deps
	$(PY) benchmarks/model_accuracy.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
