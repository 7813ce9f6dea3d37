-- How far each chain's signed checkpoints have been published to the witness outside PostgreSQL
-- (shared/witness.py). The publisher reads chain_checkpoints past this cursor, publishes, then moves it;
-- publishing is idempotent, so a crash between the two only publishes the same records again.
CREATE TABLE checkpoint_witness_cursor (
    tenant_id     text PRIMARY KEY,
    published_seq bigint NOT NULL DEFAULT 0,
    witness       text NOT NULL DEFAULT '',
    published_at  timestamptz
);

-- Where per-component roles exist (least privilege), the signer moves the cursor and the reporter reads it.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'audit_signer') THEN
        GRANT SELECT, INSERT, UPDATE ON checkpoint_witness_cursor TO audit_signer;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'audit_reporter') THEN
        GRANT SELECT ON checkpoint_witness_cursor TO audit_reporter;
    END IF;
END
$$;
