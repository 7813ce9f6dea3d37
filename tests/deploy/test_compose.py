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
    assert services["signer"]["secrets"] == ["signing-key", "canonical-keyring"] and "signing-key" in compose["secrets"]
    for name in ("receiver", "redactor", "signer", "usage", "reporter", "dlq-exporter", "migrate", "topics"):
        assert services[name]["depends_on"], name
        assert services[name]["read_only"] is True and services[name]["cap_drop"] == ["ALL"]


def test_message_keys_go_only_to_the_two_ends_of_each_topic() -> None:
    compose = _compose()
    services = compose["services"]
    holders = {name: set(service.get("secrets", [])) for name, service in services.items()}
    assert {n for n, s in holders.items() if "raw-batch-key" in s} == {"receiver", "redactor", "usage"}
    assert {n for n, s in holders.items() if "canonical-redactor-key" in s} == {"redactor"}
    assert {n for n, s in holders.items() if "canonical-keyring" in s} == {"signer"}
    assert services["redactor"]["environment"]["RAW_AUTH_KEY_FILE"] == "/run/secrets/raw-batch-key"
    assert services["redactor"]["environment"]["CANONICAL_AUTH_KEY_FILE"] == "/run/secrets/canonical-redactor-key"
    assert services["signer"]["environment"]["CANONICAL_AUTH_KEYRING_FILE"] == "/run/secrets/canonical-keyring"
    for name in ("raw-batch-key", "canonical-redactor-key", "canonical-keyring"):
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
