# make demo   run the whole pipeline on 21 days of generated sample data (./.data/)
# make ui     open the Dagster UI on those results (http://127.0.0.1:3000)
# make test   lint and run the test suite (what CI runs)
# make test-spark35  the Spark-job tests again on Spark 3.5 (what Synapse pools run), own venv
# make eval   detection precision and recall on labeled data, beside the notebook's query
# make bench  the cost of daily runs and backfills, beside the notebook's query and DuckDB

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export DAGSTER_HOME ?= $(CURDIR)/.data/dagster_home
DEMO_DAYS ?= 21
UI_PORT ?= 3000

.PHONY: demo ui test test-spark35 eval bench lint format install install-dev java chromium azurite audit clean

# One venv; each target installs only the extras it needs (demo and ui: none).
$(VENV)/.python:
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; assert (3, 11) <= v < (3, 14), \
	  "Python 3.11, 3.12 or 3.13 is required, found " + sys.version.split()[0]'
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  echo "Python's venv module is missing: sudo apt-get install python3-venv (Debian/Ubuntu)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.python
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.python
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.python
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

# Synapse runtimes are Spark 3.4/3.5, the main venv has 4.x: the Spark jobs are tested on both.
SPARK35_VENV := .venv-spark35
SPARK35 := 3.5.6
SPARK_JOB_TESTS := pipeline_tests/unit pipeline_tests/integration/test_network_sessions.py \
  pipeline_tests/integration/test_bad_input.py pipeline_tests/integration/test_lookback_window.py \
  pipeline_tests/integration/test_notebook_query.py pipeline_tests/integration/test_generated_code_size.py \
  pipeline_tests/integration/test_networks.py

$(SPARK35_VENV)/.installed: pyproject.toml $(VENV)/.python
	test -x $(SPARK35_VENV)/bin/python || $(PYTHON) -m venv $(SPARK35_VENV)
	$(SPARK35_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SPARK35_VENV)/bin/python -m pip install --quiet 'pyspark==$(SPARK35)' -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# Spark 4 needs Java 17 or newer (java -version prints e.g. `openjdk version "17.0.15"`).
java:
	@java_bin=$$(command -v java || echo "$$JAVA_HOME/bin/java"); \
	version=$$("$$java_bin" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1); \
	[ -n "$$version" ] && [ "$$version" -ge 17 ] || { \
	  echo "Spark needs Java 17 or newer; found: $${version:-none} ($$java_bin)."; \
	  echo "Install it: sudo apt-get install openjdk-17-jre-headless (Debian/Ubuntu)"; \
	  echo "            brew install openjdk@17 (macOS)"; exit 1; }

# The UI test drives Debian's Chromium through Playwright (CI runs as root).
chromium:
	@[ -x /usr/bin/chromium ] || { \
	  echo "installing chromium for the browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

# Azure Storage emulator for the ADLS / blob tests (npm, into .tools/; needs Node.js and npm).
AZURITE := .tools/node_modules/.bin/azurite-blob
$(AZURITE):
	npm install --prefix .tools --no-audit --no-fund --silent azurite@3.37.0

azurite: $(AZURITE)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: install java $(DAGSTER_HOME)/dagster.yaml
	@range=$$($(PY) -m pipeline demo-range --days $(DEMO_DAYS)) && \
	echo "demo: the last $(DEMO_DAYS) complete days, $$range, of generated sample traffic" && \
	$(VENV)/bin/dagster asset materialize -m pipeline.definitions --select '*' \
	  --partition-range "$$range" \
	  --config-json '{"loggers": {"console": {"config": {"log_level": "INFO"}}}}'
	$(PY) -m pipeline show

ui: install java $(DAGSTER_HOME)/dagster.yaml
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(UI_PORT)

lint: install-dev
	$(VENV)/bin/ruff check pipeline pipeline_tests
	$(VENV)/bin/ruff format --check pipeline pipeline_tests

format: install-dev
	$(VENV)/bin/ruff check --fix pipeline pipeline_tests
	$(VENV)/bin/ruff format pipeline pipeline_tests

test: install-dev java chromium azurite lint
	$(VENV)/bin/pytest
	$(MAKE) audit

test-spark35: $(SPARK35_VENV)/.installed java
	$(SPARK35_VENV)/bin/python -c 'import pyspark; assert pyspark.__version__ == "$(SPARK35)", pyspark.__version__'
	$(SPARK35_VENV)/bin/pytest -p no:cacheprovider $(SPARK_JOB_TESTS)

# Detection quality on labeled data (the scenario network and the real captures in
# ../shared/data/captures), ours beside the notebook's query. A report, not a test: ~10 min.
eval: install-dev java
	$(PY) -m tools.eval

# Performance on a generated export (150 hosts x 21 days, ~180 k records a day; BENCH_ARGS=
# "--scale 2" for more). A report against the performance targets, not a test: ~15 min on 2 cores.
BENCH_ARGS ?=
bench: $(VENV)/.installed-bench java
	$(PY) -m tools.bench $(BENCH_ARGS)

# Known vulnerabilities in the installed dependencies (pip-audit). Fails loudly when the
# vulnerability service cannot be reached; AUDIT=skip skips it explicitly, with a warning.
audit: install-dev
	$(PY) pipeline_tests/audit_dependencies.py

clean:
	rm -rf .data
