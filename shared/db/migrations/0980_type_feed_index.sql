-- The feed filtered by event type, with an index over fewer rows (docs/operations/sizing.md, "What one signed
-- row costs"): the signer pays for every index of audit_logs on each row it appends. api_request and
-- tool_result are most rows of Claude Code's traffic (every model call, every tool call): a page of either
-- is found within a few pages of the unfiltered feed index (audit_logs_feed_idx), read newest first and
-- filtered, so they need no index of their own. The type index keeps the other types (prompts, decisions,
-- errors, access and erasure records, anything else), where walking the feed could read far more rows than
-- a page. The reporter's feed query repeats this predicate, word for word, when it filters by one of those
-- types (services/reporter/queries.py, INDEXED_TYPES), which is what lets the planner use the index.
CREATE INDEX audit_logs_type_feed_partial_idx ON audit_logs (tenant_id, event_type, event_time DESC, id DESC)
    WHERE event_type NOT IN ('api_request', 'tool_result');
DROP INDEX audit_logs_type_feed_idx;
ALTER INDEX audit_logs_type_feed_partial_idx RENAME TO audit_logs_type_feed_idx;
