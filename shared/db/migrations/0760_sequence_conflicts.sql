-- Event ids bind the event's content, so a second, different event that claims a session and sequence
-- already taken is kept as a row of its own. Both rows are flagged here, by the signer, in the transaction
-- that appends the second one. The flag is derived from hashed columns (two rows of a tenant with the same
-- session_id and event_sequence), so it is not itself hashed: existing rows stay verifiable, and a verifier
-- recomputes it from the chain (docs/auditing.md).
ALTER TABLE audit_logs ADD COLUMN sequence_conflict boolean NOT NULL DEFAULT false;

-- The signer looks up each appended row's session and sequence; only rows that have a sequence are indexed.
CREATE INDEX audit_logs_session_sequence_idx ON audit_logs (tenant_id, session_id, event_sequence)
    WHERE event_sequence IS NOT NULL;
