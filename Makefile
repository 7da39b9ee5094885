# HeatPrompt: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= data

.PHONY: install demo test lint bench quality gpu-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/heatprompt demo --data-dir $(DATA)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks.bench_model
	$(BIN)/python -m tests.benchmarks.bench_storage
	$(BIN)/python -m tests.benchmarks.bench_app
	$(BIN)/python -m tests.benchmarks.bench_loop
	$(BIN)/python -m tests.benchmarks.bench_normality
	$(BIN)/python -m tests.benchmarks.bench_cold_start
	$(BIN)/python -m tests.benchmarks.bench_image

quality: $(STAMP)
	$(BIN)/python -m tests.benchmarks.quality --max-minutes 15

gpu-check: $(STAMP)
	$(BIN)/python -m tests.benchmarks.gpu_check

clean:
	rm -rf $(VENV) build *.egg-info
