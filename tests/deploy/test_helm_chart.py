"""The Helm chart, rendered and linted by Helm's own Go SDK (no helm binary, no cluster), every manifest
checked against the Kubernetes JSON schemas (strict: unknown fields fail), and the chart's promises checked:
probes, resources, non-root, secrets as files, PDBs, KEDA capped at the partitions, real commands."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.auditctl.ops.settings import OpsSettings
from services.auditctl.settings import CliSettings
from services.receiver.settings import ReceiverSettings
from services.redactor.settings import RedactorSettings
from services.reporter.settings import ReporterSettings
from services.signer.settings import SignerSettings
from services.usage.settings import UsageSettings
from tests.deploy.conftest import ROOT

CHART = ROOT / "deploy" / "helm" / "claude-audit-ingest"
KUBERNETES = "1.30.0"
# Keys come from existing Secrets only (never from values): every render names them.
EXISTING_SECRETS = {"existingSigningKeySecret": "audit-signing-key", "existingLicenseKeysSecret": "audit-license-keys"}
DATABASE = {"existingSecret": "audit-db"}
# KEDA's ScaledObject is a CRD the Kubernetes schemas do not hold: the fields this chart uses, from KEDA's
# documented v1alpha1 API, required where KEDA requires them.
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"],
                                   "properties": {"name": {"type": "string"}}},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer"},
                "cooldownPeriod": {"type": "integer"},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"],
                    "properties": {"type": {"const": "kafka"},
                                   "metadata": {"type": "object", "additionalProperties": {"type": "string"},
                                                "required": ["bootstrapServers", "consumerGroup", "topic",
                                                             "lagThreshold"]},
                                   "authenticationRef": {"type": "object", "required": ["name"]}}}},
            },
        },
    },
}


# Strimzi's KafkaUser (kafka.strimzi.io/v1beta2) is a CRD too: the fields this chart uses, as documented.
KAFKA_USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kafka.strimzi.io/v1beta2"},
        "kind": {"const": "KafkaUser"},
        "metadata": {"type": "object", "required": ["name", "labels"],
                     "properties": {"labels": {"type": "object", "required": ["strimzi.io/cluster"]}}},
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["authentication", "authorization"],
            "properties": {
                "authentication": {"type": "object", "properties": {"type": {"const": "scram-sha-512"}}},
                "authorization": {"type": "object", "required": ["type", "acls"], "properties": {
                    "type": {"const": "simple"},
                    "acls": {"type": "array", "minItems": 1, "items": {
                        "type": "object", "required": ["resource", "operations"], "additionalProperties": False,
                        "properties": {
                            "resource": {"type": "object", "required": ["type"], "additionalProperties": False,
                                         "properties": {"type": {"enum": ["topic", "group", "cluster"]},
                                                        "name": {"type": "string", "minLength": 1},
                                                        "patternType": {"enum": ["literal", "prefix"]}}},
                            "operations": {"type": "array", "minItems": 1, "items": {"enum": [
                                "Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction",
                                "AlterConfigs", "DescribeConfigs", "IdempotentWrite", "All"]}}}}}}},
            },
        },
    },
}


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    merged = {"secrets": EXISTING_SECRETS, "database": DATABASE, **(values or {})}
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(merged, name="audit", namespace="audit")
    docs: list[dict[str, Any]] = []
    for name, text in sorted(files.items()):
        if name.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"].removeprefix("audit-claude-audit-ingest-"): d for d in docs if d["kind"] == kind}


def test_helm_lint_is_clean() -> None:
    report = helm.lint(str(CHART), {"secrets": EXISTING_SECRETS, "database": DATABASE})
    assert report["errors"] == [], report
    assert all(m["severity"] <= 1 for m in report["messages"]), report["messages"]  # info at most


@pytest.mark.parametrize("values", [{}, {"redactor": {"keda": {"enabled": False}}},
                                    {"kafka": {"strimzi": {"enabled": False}, "caSecret": ""}}],
                         ids=["defaults", "without-keda", "without-strimzi"])
def test_every_manifest_matches_the_kubernetes_schemas(values: dict[str, Any]) -> None:
    docs = render(values)
    assert docs
    for doc in docs:
        if doc["kind"] == "ScaledObject":
            jsonschema.validate(doc, SCALED_OBJECT_SCHEMA)
        elif doc["kind"] == "KafkaUser":
            jsonschema.validate(doc, KAFKA_USER_SCHEMA)
        else:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_one_deployment_per_service_with_probes_resources_and_non_root(console_scripts: dict[str, str]) -> None:
    docs = render()
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {"receiver", "redactor", "signer", "usage", "reporter", "dlq-exporter"}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        (container,) = pod["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"], name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        script = container["command"][0]
        if name in ("reporter", "usage") and script not in console_scripts:
            continue  # test_image.py names the missing [project.scripts] entry
        assert script in console_scripts, f"{name}: {script} is not a console script"
    assert deployments["receiver"]["spec"]["replicas"] == 2
    pdbs = by_kind(docs, "PodDisruptionBudget")
    assert set(pdbs) == set(deployments)
    assert pdbs["receiver"]["spec"]["minAvailable"] == 1


def test_signing_and_licence_keys_are_secrets_mounted_as_files() -> None:
    docs = render()
    deployments = by_kind(docs, "Deployment")
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    for names, volume, setting in ((["signer"], "signing-key", "SIGNING_KEY_FILE"),
                                   (["receiver", "reporter"], "license-keys", "LICENSE_PUBLIC_KEYS_FILE")):
        for name in names:
            pod = deployments[name]["spec"]["template"]["spec"]
            mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume)
            secret = next(v for v in pod["volumes"] if v["name"] == volume)["secret"]["secretName"]
            assert mount["readOnly"] and config[setting].startswith(mount["mountPath"] + "/")
            assert secret in EXISTING_SECRETS.values()  # an existing Secret, never one the chart makes
        others = [d for n, d in deployments.items() if n not in names]  # only those that need the key get it
        assert not any(volume in str(d["spec"]["template"]["spec"].get("volumes")) for d in others)
    assert "AUDIT_SIGNING_KEY" not in str(docs)  # never an environment variable


def test_message_keys_come_from_existing_secrets_mounted_only_where_a_topic_end_needs_them() -> None:
    docs = render({"messageKeys": {"rawBatchKeySecret": "raw-keys"}})
    deployments = by_kind(docs, "Deployment")
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    for names, volume, setting, secret_name in (
        (["receiver", "redactor", "usage"], "raw-batch-key", "RAW_AUTH_KEY_FILE", "raw-keys"),
        (["redactor"], "canonical-producer-key", "CANONICAL_AUTH_KEY_FILE", "audit-claude-audit-ingest-canonical-redactor-key"),
        (["reporter"], "canonical-producer-key", "REPORTER_ACCESS_AUTH_KEY_FILE",
         "audit-claude-audit-ingest-canonical-reporter-key"),
        (["signer"], "canonical-keyring", "CANONICAL_AUTH_KEYRING_FILE", "audit-claude-audit-ingest-canonical-keyring"),
    ):
        for name in names:
            pod = deployments[name]["spec"]["template"]["spec"]
            mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume)
            secret = next(v for v in pod["volumes"] if v["name"] == volume)["secret"]
            assert mount["readOnly"] and config[setting].startswith(mount["mountPath"] + "/")
            assert secret["secretName"] == secret_name and secret["defaultMode"] == 0o400
        others = [d for n, d in deployments.items() if n not in names]  # nobody else gets that key
        assert not any(secret_name in str(d["spec"]["template"]["spec"].get("volumes")) for d in others)
    # Never generated into a chart Secret: a key in values or in a rendered Secret is in the release history.
    assert not any("raw-batch" in s["metadata"]["name"] or "canonical" in s["metadata"]["name"]
                   for s in docs if s["kind"] == "Secret")


def test_each_component_connects_with_its_own_role_and_only_the_setup_job_as_owner() -> None:
    docs = render({"database": {**DATABASE, "rolePasswordsSecret": "db-role-passwords"}})
    deployments = by_kind(docs, "Deployment")
    keys = set()
    for name in ("receiver", "redactor", "signer", "usage", "reporter", "dlq-exporter"):
        env = deployments[name]["spec"]["template"]["spec"]["containers"][0]["env"]
        (database,) = (e for e in env if e["name"] == "DATABASE_URL")
        assert database["valueFrom"]["secretKeyRef"]["name"] == "audit-db"
        keys.add(database["valueFrom"]["secretKeyRef"]["key"])
    # Six components, six keys (database.componentKeys), none of them the owner's.
    assert len(keys) == 6 and "database-url" not in keys
    job = next(d for d in docs if d["kind"] == "Job")["spec"]["template"]["spec"]
    (migrate,) = job["initContainers"]
    assert {"name": "DB_ROLE_PASSWORDS_DIR", "value": "/var/run/secrets/audit/db-roles"} in migrate["env"]
    assert next(e for e in migrate["env"] if e["name"] == "DATABASE_URL")["valueFrom"]["secretKeyRef"]["key"] == (
        "database-url")
    volume = next(v for v in job["volumes"] if v["name"] == "db-role-passwords")
    assert volume["secret"]["secretName"] == "db-role-passwords"


def test_keda_scales_the_redactor_on_lag_capped_at_the_raw_partitions() -> None:
    docs = render({"topics": {"partitions": {"raw": 24, "canonical": 12, "deadLetter": 1}}})
    scaled = by_kind(docs, "ScaledObject")["redactor"]
    assert scaled["spec"]["maxReplicaCount"] == 24
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka" and trigger["metadata"]["allowIdleConsumers"] == "false"
    assert trigger["metadata"]["topic"] == "otel.logs.raw"
    assert "replicas" not in by_kind(docs, "Deployment")["redactor"]["spec"]  # KEDA's HPA owns it
    with pytest.raises(Exception, match=r"exceeds topics\.partitions\.raw"):
        render({"redactor": {"keda": {"enabled": True, "maxReplicas": 30}}})
    without = render({"redactor": {"keda": {"enabled": False}}})
    assert not by_kind(without, "ScaledObject") and by_kind(without, "Deployment")["redactor"]["spec"]["replicas"] == 3


def test_setup_job_migrates_then_creates_topics_before_install_and_upgrade() -> None:
    (job,) = by_kind(render(), "Job").values()
    assert "pre-install" in job["metadata"]["annotations"]["helm.sh/hook"]
    pod = job["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["command"] == ["auditctl", "migrate"]
    assert pod["containers"][0]["command"] == ["auditctl", "topics", "create"]


def test_chart_values_match_the_settings_the_services_read() -> None:
    """Every variable the ConfigMap sets is a real setting of some service (no typo goes unnoticed)."""
    known = {name.upper() for cls in (ReceiverSettings, RedactorSettings, SignerSettings, ReporterSettings,
                                              UsageSettings, CliSettings, OpsSettings)
             for name in cls.model_fields}
    config = next(d for d in render() if d["kind"] == "ConfigMap")["data"]
    assert set(config) <= known, set(config) - known


def test_receiver_metrics_are_scraped_on_a_port_its_service_does_not_expose() -> None:
    """The receiver's metrics name tenants: Prometheus reads them from the pod, clients never reach them."""
    docs = render()
    receiver = by_kind(docs, "Deployment")["receiver"]["spec"]["template"]
    (container,) = receiver["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 4318, "metrics": 9464}
    assert receiver["metadata"]["annotations"]["prometheus.io/port"] == "9464"
    service = by_kind(docs, "Service")["receiver"]
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert (config["RECEIVER_PORT"], config["RECEIVER_METRICS_PORT"]) == ("4318", "9464")
    signer = by_kind(docs, "Deployment")["signer"]["spec"]["template"]
    assert signer["metadata"]["annotations"]["prometheus.io/port"] == "9466"  # one port serves all there


def test_keys_come_from_existing_secrets_only_never_from_values() -> None:
    docs = render()
    assert not by_kind(docs, "Secret")  # the chart creates no Secret: nothing sensitive in the release history
    for forbidden in ({"signingKey": "c2VlZA=="}, {"create": True}, {"databaseUrl": "postgresql://a@b/c"},
                      {"licensePublicKeys": "cHVi"}):
        with pytest.raises(Exception, match="existing Secrets only"):
            render({"secrets": {**EXISTING_SECRETS, **forbidden}})
    with pytest.raises(Exception, match=r"secrets\.existingSigningKeySecret"):
        render({"secrets": {"existingLicenseKeysSecret": "x"}})
    with pytest.raises(Exception, match=r"database\.existingSecret"):
        render({"database": {"existingSecret": ""}})


KAFKA_CLIENTS = {"receiver": "audit-receiver", "redactor": "audit-redactor", "signer": "audit-signer",
                 "usage": "audit-usage", "reporter": "audit-reporter", "dlq-exporter": "audit-ops"}


def test_each_kafka_client_connects_sasl_ssl_as_its_own_principal() -> None:
    docs = render()
    deployments = by_kind(docs, "Deployment")
    for name, principal in KAFKA_CLIENTS.items():
        pod = deployments[name]["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert env["KAFKA_SASL_USERNAME"] == principal, name
        assert env["KAFKA_SSL_CA_FILE"] == "/var/run/secrets/kafka/ca/ca.crt"
        user = next(v for v in pod["volumes"] if v["name"] == "kafka-user")["secret"]
        assert user["secretName"] == principal and user["defaultMode"] == 0o400
        assert env["KAFKA_SASL_PASSWORD_FILE"] == "/var/run/secrets/kafka/user/password"
    (job,) = by_kind(docs, "Job").values()
    topics = job["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in topics["env"]}["KAFKA_SASL_USERNAME"] == "audit-ops"
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    assert not any(key.startswith("KAFKA_S") for key in config)  # per principal, never shared


def test_each_consumer_is_a_static_group_member_named_after_its_pod_unless_turned_off() -> None:
    def instance_ids(docs: list[dict[str, Any]]) -> dict[str, Any]:
        found = {}
        for name, deployment in by_kind(docs, "Deployment").items():
            env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])}
            if "KAFKA_GROUP_INSTANCE_ID" in env:
                found[name] = env["KAFKA_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
        return found

    ids = instance_ids(render())
    assert sorted(name.rsplit("-", 1)[-1] for name in ids) == ["redactor", "signer", "usage"]
    assert set(ids.values()) == {"metadata.name"}
    assert instance_ids(render({"kafka": {"staticMembership": False}})) == {}


def _grants(docs: list[dict[str, Any]]) -> dict[str, set[tuple[str, str, str]]]:
    return {user["metadata"]["name"]: {(acl["resource"]["type"], acl["resource"].get("name", ""), operation)
                                       for acl in user["spec"]["authorization"]["acls"]
                                       for operation in acl["operations"]}
            for user in by_kind(docs, "KafkaUser").values()}


def test_strimzi_users_get_acls_for_their_own_stage_only() -> None:
    grants = _grants(render())
    assert set(grants) == {"audit-receiver", "audit-redactor", "audit-signer", "audit-usage", "audit-reporter",
                           "audit-ops"}

    def who(operation: str, topic: str) -> set[str]:
        return {user for user, granted in grants.items() if ("topic", topic, operation) in granted}

    assert who("Write", "otel.logs.raw") == who("Write", "otel.metrics.raw") == {"audit-receiver", "audit-ops"}
    assert who("Read", "otel.logs.raw") == {"audit-redactor", "audit-ops"}
    assert who("Read", "otel.metrics.raw") == {"audit-usage", "audit-ops"}
    assert who("Write", "audit.events.canonical") == {"audit-redactor", "audit-reporter", "audit-ops"}
    assert grants["audit-reporter"] == {("topic", "audit.events.canonical", o) for o in ("Write", "Describe")}
    assert who("Read", "audit.events.canonical") == {"audit-signer", "audit-ops"}
    assert grants["audit-receiver"] == {("topic", t, o) for t in ("otel.logs.raw", "otel.metrics.raw")
                                        for o in ("Write", "Describe")}
    assert {g for g in grants["audit-signer"] if g[0] == "group"} == {("group", "audit-signer", "Read")}
    assert not any(g[0] == "cluster" for u, gs in grants.items() if u != "audit-ops" for g in gs)
