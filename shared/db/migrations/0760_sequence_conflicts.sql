-- Event ids bind the event's content, so a second, different event that claims a session and sequence
-- already taken is kept as a row of its own. Both rows are flagged here, by the signer, in the transaction
-- that appends the second one. The flag is derived from hashed columns (two rows of a tenant with the same
-- session_id and event_sequence), so it is not itself hashed: existing rows stay verifiable, and a verifier
-- recomputes it from the chain (docs/auditing.md).
ALTER TABLE audit_logs ADD COLUMN sequence_conflict boolean NOT NULL DEFAULT false;

-- The signer looks up each appended row's session and sequence; only rows that have a sequence are indexed.
CREATE INDEX audit_logs_session_sequence_idx ON audit_logs (tenant_id, session_id, event_sequence)
    WHERE event_sequence IS NOT NULL;

-- audit_logs stays append-only (0620) with one exception: the signer may set sequence_conflict from false to
-- true, and nothing else. The statement-level refusal now covers every other column (so it still fires
-- whether or not a row matches); a row-level check refuses any update that changes anything but the flag,
-- or clears it. The privilege side is a column grant to audit_signer (shared/db/privileges.sql).
DROP TRIGGER audit_logs_append_only ON audit_logs;

DO $$
BEGIN
    EXECUTE format(
        'CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OF %s OR DELETE OR TRUNCATE ON audit_logs'
        ' FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()',
        (SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
          WHERE attrelid = 'audit_logs'::regclass AND attnum > 0 AND NOT attisdropped
            AND attname <> 'sequence_conflict'));
END
$$;

CREATE FUNCTION audit_logs_only_flag_conflicts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (to_jsonb(NEW) - 'sequence_conflict') IS DISTINCT FROM (to_jsonb(OLD) - 'sequence_conflict')
       OR (OLD.sequence_conflict AND NOT NEW.sequence_conflict) THEN
        RAISE EXCEPTION 'audit_logs is append-only: only sequence_conflict may be set, never cleared'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_logs_flag_conflicts_only BEFORE UPDATE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_only_flag_conflicts();
