# Every target installs what it needs on first use: a fresh clone needs only Python 3.11+
# and redis-server on the PATH.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The lock and audit tools get a virtualenv of their own, so they never change what the tests
# run on; inside .venv, so `make clean` and the linters' excludes cover it.
TOOLS := $(VENV)/tools
TOOLS_STAMP := $(TOOLS)/.installed
TOOL_PINS := pip==26.3 pip-tools==7.6.2 pip-audit==2.10.1
# Lock against the package index alone: a machine's own pip configuration (mirrors, local
# wheel folders, constraints) must not decide which files the image's hashes allow.
PIP_ISOLATED := env -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null
PIP_COMPILE := $(TOOLS)/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links

.PHONY: install test test-unit test-integration check audit lock demo bench soak clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(TOOLS_STAMP):
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet $(TOOL_PINS)
	touch $(TOOLS_STAMP)

# Unit tests run in a process of their own: threads that integration tests leave running (their
# workers' clients, retry jitter) would touch the global random state while hypothesis draws.
test: $(STAMP)
	$(PY) -m pytest tests/unit
	$(PY) -m pytest tests/integration tests/reliability

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest tests/integration

check: $(STAMP) audit
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Known vulnerabilities in the image's locked packages (ops/audit.py says what is skipped, and why).
audit: $(STAMP) $(TOOLS_STAMP)
	$(PIP_ISOLATED) $(PY) -m ops.audit --pip-audit $(TOOLS)/bin/pip-audit \
		ops/requirements.txt ops/requirements-build.txt

# Rewrite the image's hashed locks from pyproject.toml; pins already in them are kept unless
# pyproject.toml asks otherwise (add --upgrade-package NAME to PIP_COMPILE to move one).
lock: $(TOOLS_STAMP)
	$(PIP_ISOLATED) CUSTOM_COMPILE_COMMAND="make lock" $(PIP_COMPILE) --output-file ops/requirements.txt pyproject.toml
	$(PIP_ISOLATED) CUSTOM_COMPILE_COMMAND="make lock" $(PIP_COMPILE) --only-build-deps --build-deps-for wheel \
		--output-file ops/requirements-build.txt pyproject.toml

# PROFILE=current|legacy|strict picks the tenant the fake Halo plays.
demo: $(STAMP)
	$(PY) -m tests.harness.demo $(if $(PROFILE),--profile $(PROFILE))

bench: $(STAMP)
	$(PY) -m bench

soak: $(STAMP)
	$(PY) -m bench.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
