-- Key rotation and signed checkpoints.

-- Which key signs a tenant's chain from which sequence number on. A row must be signed by the key
-- active at its sequence number, so rotation never invalidates older rows, and a row re-signed later
-- with another key is caught.
CREATE TABLE key_activations (
    tenant_id  text NOT NULL,
    from_seq   bigint NOT NULL CHECK (from_seq >= 1),
    key_id     text NOT NULL REFERENCES signing_keys (key_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, from_seq)
);

ALTER TABLE chain_heads
    ADD COLUMN key_id text,
    ADD COLUMN checkpoint_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN checkpoint_at timestamptz;

-- Signed statements "tenant T's chain had head H at sequence S", for auditors to keep outside the
-- database: against a saved checkpoint, a truncated or rolled-back chain is detectable.
CREATE TABLE chain_checkpoints (
    tenant_id  text NOT NULL,
    chain_seq  bigint NOT NULL,
    head_hash  bytea NOT NULL CHECK (length(head_hash) = 32),
    created_at timestamptz NOT NULL,
    key_id     text NOT NULL REFERENCES signing_keys (key_id),
    signature  bytea NOT NULL CHECK (length(signature) = 64),
    PRIMARY KEY (tenant_id, chain_seq)
);
