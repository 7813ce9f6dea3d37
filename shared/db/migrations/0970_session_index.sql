-- One index per session instead of two (docs/operations/sizing.md, "What one signed row costs"): the signer
-- pays for every index of audit_logs on each row it appends. A session's rows were indexed twice, by
-- (tenant_id, session_id, event_time) for the reporting queries of one session (0001) and by
-- (tenant_id, session_id, event_sequence), rows with a sequence only, for the signer's sequence-conflict
-- lookup and session completeness (0760). Every query of one session reads all of its rows (a session
-- summary, its errors and conflicts, its completeness, the feed of one session) and sorts the few it
-- returns, so the first key pair is all they need; the conflict lookup needs the sequence as the third key.
-- One index over every row, (tenant_id, session_id, event_sequence), serves both.
CREATE INDEX audit_logs_session_sequence_all_idx ON audit_logs (tenant_id, session_id, event_sequence);
DROP INDEX audit_logs_session_idx;
DROP INDEX audit_logs_session_sequence_idx;
ALTER INDEX audit_logs_session_sequence_all_idx RENAME TO audit_logs_session_idx;
