# Everything installs into .venv on first use; only python3 and pip are needed on the machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ORG    ?= dev
PIP_FLAGS ?= --disable-pip-version-check -q

.PHONY: help run test test-unit test-integration test-e2e lint typecheck license verify checkpoints \
        bench bench-receiver bench-redactor bench-signer eval-redaction clean

help:
	@echo "make run        start PostgreSQL, the broker and the three services (Ctrl-C stops all)"
	@echo "make test       unit, integration and end-to-end tests"
	@echo "make license ORG=<org>   issue a licence; the key is the last line"
	@echo "make verify     recompute every hash chain and check every signature"
	@echo "make lint / make typecheck"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	@$(PY) -m pip install $(PIP_FLAGS) -e ".[devstack,dev]"
	@touch $(STAMP)

run: $(STAMP)
	@$(PY) -m deploy.local.stack run

test: $(STAMP)
	@$(PY) -m pytest -q tests

test-unit: $(STAMP)
	@$(PY) -m pytest -q tests/unit

test-integration: $(STAMP)
	@$(PY) -m pytest -q tests/integration

test-e2e: $(STAMP)
	@$(PY) -m pytest -q tests/e2e

lint: $(STAMP)
	@$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	@$(VENV)/bin/mypy

license: $(STAMP)
	@$(PY) -m deploy.local.stack with-db -- $(VENV)/bin/auditctl license issue --org "$(ORG)"

verify: $(STAMP)
	@$(PY) -m deploy.local.stack with-db -- $(VENV)/bin/auditctl verify

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
