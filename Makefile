# The two commands: `make demo` runs the embedded tiny sweep, `make test` runs the suite.
# Both create .venv on first use and install the project into it. `make test-fast` is the edit loop:
# the suite without the tests marked slow (processes, sweeps, training, a browser, full-size networks).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned to the build this machine ships, so the rest does not pull another one
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev,ray,quantization,tune,cache-dit]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/repro sweep configs/tiny.yaml
	$(BIN)/repro figures runs/tiny

# tests run in parallel, one worker per core (pytest-xdist); a worker steals queued tests from a busy one
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist worksteal

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist worksteal -m "not slow"

clean:
	rm -rf runs wandb
