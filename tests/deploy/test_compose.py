"""deploy/compose.yaml against the compose-spec JSON schema (the copy check-jsonschema vendors, pinned), and
the deployment's promises: three KRaft brokers of the official image, RF 3, min ISR 2, no unclean leader
election, PostgreSQL, two receivers, N redactors, and commands that exist."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.deploy.conftest import ROOT

COMPOSE = ROOT / "deploy" / "compose.yaml"


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def _schema() -> dict[str, Any]:
    text = (resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def test_compose_file_matches_the_compose_spec_schema() -> None:
    validator = jsonschema.Draft7Validator(_schema(), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_three_kraft_brokers_with_durable_settings() -> None:
    services = _compose()["services"]
    brokers = {name: s for name, s in services.items() if name.startswith("kafka-")}
    assert len(brokers) == 3
    voters = set()
    for broker in brokers.values():
        env = broker["environment"]
        assert broker["image"].startswith("apache/kafka:")
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        voters.add(env["KAFKA_CONTROLLER_QUORUM_VOTERS"])
        assert broker["volumes"], "broker data must outlive the container"
    assert len(voters) == 1 and len(next(iter(voters)).split(",")) == 3
    assert len({b["environment"]["KAFKA_NODE_ID"] for b in brokers.values()}) == 3


def test_services_replicas_topics_and_secrets() -> None:
    compose = _compose()
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["receiver"]["deploy"]["replicas"] == 2
    assert "REDACTOR_REPLICAS" in str(services["redactor"]["deploy"]["replicas"])
    assert services["topics"]["environment"]["TOPIC_REPLICATION_FACTOR"] == "3"
    assert services["signer"]["environment"]["SIGNING_KEY_FILE"] == "/run/secrets/signing-key"
    assert "signing-key" in services["signer"]["secrets"] and "signing-key" in compose["secrets"]
    for name in ("receiver", "redactor", "signer", "usage", "reporter", "dlq-exporter", "migrate", "topics"):
        assert services[name]["depends_on"], name
        assert services[name]["read_only"] is True and services[name]["cap_drop"] == ["ALL"]


def test_message_keys_go_only_to_the_two_ends_of_each_topic() -> None:
    compose = _compose()
    services = compose["services"]
    holders = {name: set(service.get("secrets", [])) for name, service in services.items()}
    assert {n for n, s in holders.items() if "raw-batch-key" in s} == {"receiver", "redactor", "usage"}
    assert {n for n, s in holders.items() if "canonical-redactor-key" in s} == {"redactor"}
    assert {n for n, s in holders.items() if "canonical-reporter-key" in s} == {"reporter"}
    assert {n for n, s in holders.items() if "canonical-keyring" in s} == {"signer"}
    assert services["redactor"]["environment"]["RAW_AUTH_KEY_FILE"] == "/run/secrets/raw-batch-key"
    assert services["redactor"]["environment"]["CANONICAL_AUTH_KEY_FILE"] == "/run/secrets/canonical-redactor-key"
    assert services["signer"]["environment"]["CANONICAL_AUTH_KEYRING_FILE"] == "/run/secrets/canonical-keyring"
    for name in ("raw-batch-key", "canonical-redactor-key", "canonical-reporter-key", "canonical-keyring"):
        assert compose["secrets"][name]["file"].startswith("./secrets/")


def test_each_service_builds_the_target_that_runs_it() -> None:
    services = _compose()["services"]
    for name in ("receiver", "redactor", "signer", "usage", "reporter"):
        assert services[name]["build"]["target"] == name
    assert services["migrate"]["build"]["target"] == "auditctl" and services["migrate"]["command"] == ["migrate"]
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["dlq-exporter"]["command"] == ["dlq", "exporter"]


def test_mounted_configuration_files_exist() -> None:
    for service in _compose()["services"].values():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (COMPOSE.parent / source).exists(), source
    assert Path(COMPOSE.parent / "compose.env.example").exists()


SERVICE_PRINCIPALS = {"receiver": "receiver", "redactor": "redactor", "signer": "signer", "usage": "usage",
                      "reporter": "reporter", "topics": "ops", "dlq-exporter": "ops"}


def test_kafka_is_sasl_ssl_with_mutual_tls_inside_and_no_acl_no_access() -> None:
    services = _compose()["services"]
    for name, broker in ((n, s) for n, s in services.items() if n.startswith("kafka-")):
        env = broker["environment"]
        listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
        protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        assert {protocols[listener] for listener in listeners} == {"SASL_SSL", "SSL"}, name  # nothing in clear
        assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
        assert env["KAFKA_LISTENER_NAME_BROKER_SSL_CLIENT_AUTH"] == "required"
        assert env["KAFKA_LISTENER_NAME_CONTROLLER_SSL_CLIENT_AUTH"] == "required"
        assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
        assert set(env["KAFKA_SUPER_USERS"].split(";")) == {"User:kafka-broker", "User:kafka-admin"}
        assert all(a.startswith(("SASL_SSL://", "BROKER://")) for a in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
        assert "ports" not in broker, name


def test_each_kafka_client_uses_its_own_principal_and_only_its_own_secrets() -> None:
    services = _compose()["services"]
    for name, principal in SERVICE_PRINCIPALS.items():
        env, granted = services[name]["environment"], set(services[name]["secrets"])
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", name
        assert env["KAFKA_SASL_USERNAME_FILE"] == f"/run/secrets/kafka-{principal}-username", name
        assert env["KAFKA_SASL_PASSWORD_FILE"] == f"/run/secrets/kafka-{principal}-password", name
        kafka_secrets = {s for s in granted if s.startswith("kafka-")}
        assert kafka_secrets == {"kafka-ca", f"kafka-{principal}-username", f"kafka-{principal}-password"}, name
    principals = (COMPOSE.parent / "kafka" / "principals.sh").read_text()
    assert "for name in receiver redactor signer usage reporter ops; do" in principals  # each one created
    assert "kafka-reporter-password" in services["principals"]["secrets"]


def _acls() -> list[tuple[str, set[str], set[str], str]]:
    """(principal, operations, resources, kind) for every `acl ...` line of deploy/kafka/principals.sh."""
    text = (COMPOSE.parent / "kafka" / "principals.sh").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] != "acl":
            continue
        principal = words[words.index("--allow-principal") + 1].removeprefix("User:")
        operations = {words[i + 1] for i, w in enumerate(words) if w == "--operation"}
        resources = {words[i + 1].strip('"') for i, w in enumerate(words) if w in ("--topic", "--group")}
        kind = "cluster" if "--cluster" in words else "group" if "--group" in words else "topic"
        found.append((principal, operations, resources, kind))
    return found


def test_acls_give_each_principal_only_its_stage() -> None:
    writers: dict[str, set[str]] = {}
    readers: dict[str, set[str]] = {}
    for principal, operations, named, kind in _acls():
        if kind != "topic":
            continue
        for resource in named:
            if "Write" in operations:
                writers.setdefault(resource, set()).add(principal)
            if "Read" in operations:
                readers.setdefault(resource, set()).add(principal)
    raw_logs, raw_metrics, canonical = "$RAW_LOGS", "$RAW_METRICS", "$CANONICAL"
    # Only the receiver writes the raw topics (ops re-enters them for replay and requeue, by design).
    assert writers[raw_logs] == {"receiver", "ops"} and writers[raw_metrics] == {"receiver", "ops"}
    # Only redactors read raw logs and write canonical (usage is the raw metrics' consumer).
    assert readers[raw_logs] == {"redactor", "ops"} and readers[raw_metrics] == {"usage", "ops"}
    # The reporter (its access events) and ops (replay, auditctl erase) write canonical too; the signers'
    # keyring narrows what each may put there.
    assert writers[canonical] == {"redactor", "reporter", "ops"}
    reporter_grants = [(operations, named, kind) for principal, operations, named, kind in _acls()
                       if principal == "reporter"]
    assert reporter_grants == [({"Write", "Describe"}, {canonical}, "topic")]  # write-only, nothing else
    # Only signers read canonical.
    assert readers[canonical] == {"signer", "ops"}
    groups = {principal: named for principal, _, named, kind in _acls() if kind == "group"}
    assert groups == {"redactor": {"${REDACTOR_GROUP_ID:-audit-redactor}"},
                      "usage": {"${USAGE_GROUP_ID:-audit-usage}"}, "signer": {"${SIGNER_GROUP_ID:-audit-signer}"}}
    clusters = {principal for principal, _, _, kind in _acls() if kind == "cluster"}
    assert clusters == {"ops"}


def test_every_kafka_secret_file_is_one_the_generator_writes(tmp_path: Path) -> None:
    from deploy.local.kafka_secrets import write_kafka_secrets  # noqa: PLC0415

    written = {p.name for p in write_kafka_secrets(tmp_path)}
    for name, secret in _compose()["secrets"].items():
        if name.startswith("kafka-"):
            assert Path(secret["file"]).name in written, name
    for path in tmp_path.iterdir():
        if not path.name.endswith("ca.pem"):
            assert path.stat().st_mode & 0o077 == 0, path  # owner-only, as the services require


def test_http_ports_are_loopback_only_and_observability_needs_a_login() -> None:
    services = _compose()["services"]
    assert services["receiver"]["ports"] == ["${RECEIVER_BIND:-127.0.0.1}:4318-4319:4318"]
    assert services["reporter"]["ports"] == ["${REPORTER_BIND:-127.0.0.1}:8080:8080"]
    assert "ports" not in services["prometheus"]  # tenant-labelled metrics stay on the compose network
    grafana = services["grafana"]
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana-admin-password"
    assert grafana["ports"] == ["${GRAFANA_BIND:-127.0.0.1}:3000:3000"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"receiver", "reporter", "grafana"}
    header = COMPOSE.read_text().split("name:", 1)[0]
    assert "must sit behind a TLS-terminating proxy" in header
