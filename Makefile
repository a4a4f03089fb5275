# Every target installs what it needs on first use: a fresh clone needs only Python 3.11+
# and redis-server on the PATH.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-unit test-integration check demo bench soak clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit

test-integration: $(STAMP)
	$(PY) -m pytest tests/integration

check: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# PROFILE=current|legacy|strict picks the tenant the fake Halo plays.
demo: $(STAMP)
	$(PY) -m ops.demo $(if $(PROFILE),--profile $(PROFILE))

bench: $(STAMP)
	$(PY) -m ops.bench

soak: $(STAMP)
	$(PY) -m ops.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
