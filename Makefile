# On a fresh machine: `make demo` (main job: CPU sweep of spaces/quickstart.yaml + its report) and `make test`.
# Both create .venv and install the project into it first. Without an NVIDIA GPU, torch is pinned to a CPU
# build through .ci/cpu-constraints.txt so no multi-GB CUDA wheels are pulled.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
CONSTRAINTS := $(if $(HAS_GPU),,-c .ci/cpu-constraints.txt)
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml .ci/cpu-constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	# --yes: quickstart's budgets are fixed and small, so no calibration run before the live progress table
	$(VENV)/bin/lolsearch sweep spaces/quickstart.yaml --out results/quickstart --yes
	$(VENV)/bin/lolsearch report results/quickstart
	@echo "report: results/quickstart/report.md"

# The suite in two parts: the tests that neither start Ray sweeps nor compare wall-clock times, on every core
# (pytest-xdist), then the `serial` ones (tests/conftest.py) alone. Fails if either part fails.
test: $(STAMP)
	$(PY) -m pytest -q -n auto -m "not serial"; a=$$?; $(PY) -m pytest -q -m serial; b=$$?; [ $$a -eq 0 ] && [ $$b -eq 0 ]

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

clean-venv:
	rm -rf $(VENV)
