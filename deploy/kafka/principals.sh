#!/bin/sh
# One SCRAM-SHA-512 principal per component, and ACLs that let each do its own work only:
#   receiver  writes the raw topics (logs and metrics)                     - and nothing else
#   redactor  reads raw logs (its group), writes canonical and dead letters
#   usage     reads raw metrics (its group), writes dead letters            - the metrics pipeline's consumer
#   signer    reads canonical (its group), writes dead letters
#   reporter  writes canonical (its access events)                           - and nothing else
#   ops       auditctl (topics create, replay, dlq, erase) and the dead-letter exporter: reads every topic,
#             creates them, and writes where replay and requeue re-enter the pipeline (raw, canonical), the
#             requeue markers and erase's erasure events (canonical); the only principal besides the
#             receiver that can write a raw topic
# What the reporter and ops may put on canonical is narrowed further by the signers' keyring (each producer
# key signs only its own planes: docs/operations/deployment.md#message-keys).
# Nothing else is allowed (allow.everyone.if.no.acl.found=false). Runs as kafka-admin (mutual TLS).
set -eu
BIN=/opt/kafka/bin
ADMIN="--bootstrap-server kafka-1:9094 --command-config /etc/kafka-admin/admin.properties"
RAW_LOGS=${TOPIC_RAW_LOGS:-otel.logs.raw}
RAW_METRICS=${TOPIC_RAW_METRICS:-otel.metrics.raw}
CANONICAL=${TOPIC_CANONICAL:-audit.events.canonical}
DEAD_LETTER=${TOPIC_DEAD_LETTER:-audit.deadletter}
REQUEUED=${TOPIC_DEAD_LETTER_REQUEUED:-audit.deadletter.requeued}

for name in receiver redactor signer usage reporter ops; do
  password=$(cat "/run/secrets/kafka-$name-password")
  # shellcheck disable=SC2086
  $BIN/kafka-configs.sh $ADMIN --alter --entity-type users --entity-name "$name" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=$password]"
done

acl() {
  # shellcheck disable=SC2086
  $BIN/kafka-acls.sh $ADMIN --add --force "$@"
}
acl --allow-principal User:receiver --operation Write --operation Describe --topic "$RAW_LOGS" --topic "$RAW_METRICS"
acl --allow-principal User:redactor --operation Read --operation Describe --topic "$RAW_LOGS"
acl --allow-principal User:redactor --operation Read --group "${REDACTOR_GROUP_ID:-audit-redactor}"
acl --allow-principal User:redactor --operation Write --operation Describe --topic "$CANONICAL" --topic "$DEAD_LETTER"
acl --allow-principal User:usage --operation Read --operation Describe --topic "$RAW_METRICS"
acl --allow-principal User:usage --operation Read --group "${USAGE_GROUP_ID:-audit-usage}"
acl --allow-principal User:usage --operation Write --operation Describe --topic "$DEAD_LETTER"
acl --allow-principal User:signer --operation Read --operation Describe --topic "$CANONICAL"
acl --allow-principal User:signer --operation Read --group "${SIGNER_GROUP_ID:-audit-signer}"
acl --allow-principal User:signer --operation Write --operation Describe --topic "$DEAD_LETTER"
acl --allow-principal User:reporter --operation Write --operation Describe --topic "$CANONICAL"
acl --allow-principal User:ops --operation Describe --operation Create --cluster
acl --allow-principal User:ops --operation Read --operation Describe --operation DescribeConfigs \
    --topic "$RAW_LOGS" --topic "$RAW_METRICS" --topic "$CANONICAL" --topic "$DEAD_LETTER" --topic "$REQUEUED"
acl --allow-principal User:ops --operation Create \
    --topic "$RAW_LOGS" --topic "$RAW_METRICS" --topic "$CANONICAL" --topic "$DEAD_LETTER" --topic "$REQUEUED"
acl --allow-principal User:ops --operation Write --topic "$RAW_LOGS" --topic "$RAW_METRICS" --topic "$CANONICAL" \
    --topic "$REQUEUED"
echo "principals and ACLs in place"
