# Two commands do everything: `make demo` and `make test`. Both build .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_WAIT_POLICY ?= PASSIVE
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: demo test test-all test-spark lint format bench clean

$(STAMP): pyproject.toml
	@echo "[1/3] creating $(VENV) (first time only)" >&2
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "[2/3] installing the project and its dependencies into $(VENV) (about 2 min the first time)" >&2
	$(BIN)/pip install -q -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
	@echo "[3/3] checking the imports" >&2
	$(BIN)/python -c "import offers, lightgbm, mlflow, ibis, duckdb"
	touch $(STAMP)
	@echo "$(VENV) ready: '. $(VENV)/bin/activate' puts the offers command on PATH" >&2

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/offers demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-spark: $(STAMP)
	$(BIN)/pip install -q -e '.[dev,spark]' 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -c "import pyspark, ibis.backends.pyspark"
	java -version
	$(BIN)/python -m pytest -q -m spark

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .offers .pytest_cache
