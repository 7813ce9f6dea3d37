"""The OTLP/HTTP receiver: the only part of the pipeline exposed to the internet.

``POST /v1/logs`` and ``POST /v1/metrics`` take OTLP/HTTP (``application/x-protobuf`` or
``application/json``, ``Content-Encoding: gzip`` or none, with or without Content-Length), authenticated
by HTTP Basic ``org:licence-key``. A batch is answered 200 only after the broker acknowledged it
(``acks=all``); it goes to the raw topic decompressed and otherwise as received, keyed by tenant, with the
headers tenant, org, license_id, content_type, received_at (ns), request_id, record_count and chunk.

Answers (bodies encoded like the request; protobuf when the request's type is unknown):

==========  ===========================================================================================
200         ExportLogsServiceResponse / ExportMetricsServiceResponse; ``partial_success`` when records
            were refused (more than MAX_RECORDS_PER_REQUEST, or a record too large for one Kafka message
            on its own); an empty request is a 200 too
400         undecodable body (protobuf, JSON, gzip); google.rpc.Status with a BadRequest detail
401         no or untrustworthy credentials (bad Basic, bad signature, unknown issuer, user is not the
            licence's org); ``WWW-Authenticate: Basic``
403         a genuine licence that is expired, revoked, or lacks the ``otel_ingest`` entitlement
404 / 405   unknown path / method, as google.rpc.Status
413         body over MAX_BODY_BYTES, declared or after decompression (a gzip bomb is never inflated
            past the limit)
415         Content-Type or Content-Encoding not supported
429         the tenant's token bucket (records/s) is empty; Retry-After and RetryInfo say when to retry
503         broker unavailable (or not yet reached), revocation list not loaded yet, in-flight byte or
            concurrent-batch limit reached; always with Retry-After
==========  ===========================================================================================

Decisions worth knowing:

- 429 means "this tenant is over its rate" and nothing else; the receiver's own overload is a 503.
- A record that cannot fit one Kafka message (KAFKA_MAX_MESSAGE_BYTES, the production broker's
  message.max.bytes) is refused through ``partial_success`` and the rest of the request is stored: the
  client must not retry it, and refusing the whole request would lose the good records as well.
- Tenancy comes from the licence only; an ``organization.id`` (or any) attribute never decides it.
- Licences are verified offline; the revocation list is refreshed from PostgreSQL every
  REVOCATION_REFRESH_SECONDS, and until it has been loaded once, ingest answers 503 (fail closed).
- JSON follows the OTLP rules (hex ids, int64 as numbers or strings, integer enums, unknown fields
  ignored). Being lenient where it costs nothing, it also accepts the original snake_case field names
  and enum names, which OTLP senders must not use but older ones did.
- After a broker failure, requests are answered 503 at once, without touching the broker, except one
  per BROKER_PROBE_INTERVAL_SECONDS that tries it; the first success closes the circuit.
- SIGTERM: /readyz turns 503, the listener closes, in-flight requests finish (each waiting for its
  acknowledgement), the producer is flushed, the process exits 0.

Metrics (``GET /metrics`` on RECEIVER_METRICS_PORT, not the OTLP port):
``otelcol_receiver_accepted_log_records_total`` and ``otelcol_receiver_refused_log_records_total``
(labels receiver, transport, tenant, reason; the same for ``..._metric_points``),
``otelcol_receiver_refused_requests_total`` (http_route, reason), ``http_server_request_duration_seconds``
(http_route, http_response_status_code), ``otelcol_receiver_enqueue_duration_seconds``,
``otelcol_receiver_in_flight_bytes`` (and its limit) and ``otelcol_receiver_broker_available``.
They name tenants, which is why they have a port of their own.
"""
