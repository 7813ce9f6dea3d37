-- Foundation schema: the one canonical store, its chains, the signer's offsets, licences and keys.

CREATE TABLE licenses (
    license_id   text PRIMARY KEY,
    org_id       text NOT NULL,
    tenant_id    text NOT NULL,
    entitlements text[] NOT NULL,
    issued_at    timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    key_id       text NOT NULL,
    revoked_at   timestamptz,
    revoked_reason text
);
CREATE INDEX licenses_org_idx ON licenses (org_id);

-- Public halves of every key that ever signed a chain row, with the rows they cover.
CREATE TABLE signing_keys (
    key_id       text PRIMARY KEY,
    public_key   bytea NOT NULL CHECK (length(public_key) = 32),
    algorithm    text NOT NULL DEFAULT 'ed25519',
    valid_from   timestamptz NOT NULL DEFAULT now(),
    valid_until  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_logs (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id              text NOT NULL UNIQUE,
    tenant_id             text NOT NULL,
    org_id                text NOT NULL,
    license_id            text,
    plane                 text NOT NULL,
    event_type            text NOT NULL,
    session_id            text,
    correlation_id        text,
    event_sequence        bigint,
    event_time            timestamptz NOT NULL,
    received_at           timestamptz NOT NULL,
    user_email            text,
    user_id               text,
    user_account_uuid     text,
    claimed_org_id        text,
    claimed_org_mismatch  boolean NOT NULL DEFAULT false,
    service_name          text,
    service_version       text,
    model                 text,
    input_tokens          bigint,
    output_tokens         bigint,
    cache_read_tokens     bigint,
    cache_creation_tokens bigint,
    tokens_used           bigint,
    cost                  numeric(20, 6),
    duration_ms           bigint,
    decision              text,
    decision_source       text,
    tool_name             text,
    success               boolean,
    status_code           integer,
    attempt               integer,
    content               jsonb NOT NULL DEFAULT '{}'::jsonb,
    content_lengths       jsonb NOT NULL DEFAULT '{}'::jsonb,
    redacted_fields       jsonb NOT NULL DEFAULT '{}'::jsonb,
    content_captured      boolean NOT NULL DEFAULT false,
    attributes            jsonb NOT NULL DEFAULT '{}'::jsonb,
    batch_id              text,
    chain_seq             bigint NOT NULL,
    prev_hash             bytea NOT NULL,
    row_hash              bytea NOT NULL,
    signature             bytea NOT NULL,
    signing_key_id        text NOT NULL,
    hash_version          smallint NOT NULL,
    UNIQUE (tenant_id, chain_seq)
);
CREATE INDEX audit_logs_feed_idx ON audit_logs (tenant_id, event_time DESC, id DESC);
CREATE INDEX audit_logs_session_idx ON audit_logs (tenant_id, session_id, event_time);
CREATE INDEX audit_logs_user_idx ON audit_logs (tenant_id, user_id, event_time);

-- The head of each tenant's chain; the signer locks this row to append, which makes forks impossible.
CREATE TABLE chain_heads (
    tenant_id   text PRIMARY KEY,
    head_seq    bigint NOT NULL,
    head_hash   bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Kafka offsets of the canonical topic, written in the same transaction as the rows they produced.
CREATE TABLE signer_offsets (
    consumer_group text NOT NULL,
    topic          text NOT NULL,
    partition      integer NOT NULL,
    next_offset    bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
