-- Hash version 2 (docs/auditing.md, "Hash version 2: erasable content"): a row's content lives apart from
-- the signed row, which keeps only a salted digest of it, so the content can be erased without breaking the
-- chain.

-- SHA-256(salt || JCS(content)) of a version 2 row; NULL on version 1 rows, whose content is in the row.
ALTER TABLE audit_logs ADD COLUMN content_digest bytea CHECK (content_digest IS NULL OR length(content_digest) = 32);

-- The content of each version 2 row and its salt, keyed by the row. Erasure deletes the line: digest stays.
CREATE TABLE audit_content (
    tenant_id   text NOT NULL,
    chain_seq   bigint NOT NULL,
    salt        bytea NOT NULL CHECK (length(salt) = 32),
    content     jsonb NOT NULL,
    PRIMARY KEY (tenant_id, chain_seq)
);

-- What the reporter shows in place of erased content. Not trusted by verification, which reads the signed
-- erasure events instead; written by auditctl erase in the transaction that deletes the content.
CREATE TABLE content_erasures (
    tenant_id         text NOT NULL,
    chain_seq         bigint NOT NULL,
    erasure_event_id  text NOT NULL,
    erased_at         timestamptz NOT NULL,
    erased_by         text NOT NULL,
    reason            text NOT NULL,
    PRIMARY KEY (tenant_id, chain_seq)
);

-- Content is written once and then only ever deleted whole: changing it in place is refused outright
-- (a superuser who disables this still fails verification: the digest no longer matches).
CREATE FUNCTION audit_content_refuse_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_content can be inserted or erased, never changed: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_content_no_update
    BEFORE UPDATE OR TRUNCATE ON audit_content
    FOR EACH STATEMENT EXECUTE FUNCTION audit_content_refuse_update();

-- Privileges (the signer inserts, the reporter reads, only audit_admin deletes) are in shared/db/privileges.sql.
