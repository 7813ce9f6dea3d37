-- Less database CPU per appended row (docs/operations/sizing.md, "What one signed row costs"): the signer pays for
-- every index entry of audit_logs on each row it appends, and most of an entry's cost is comparing keys on the
-- way down the index and logging the insert.
--
-- On an existing table: the identifier columns keep their type, so no row is rewritten, but the indexes on them
-- are rebuilt (event_id's unique index, the session, user, type and tool indexes; the decision index is
-- replaced), all under the ACCESS EXCLUSIVE lock of ALTER TABLE, which holds the signer and the reporter until
-- the migration commits: 15 seconds for 2,000,000 rows on a busy two-core machine. Everything else is catalog only.

-- 1. Identifiers compare as bytes. In the database's collation, every comparison of two different strings goes
-- through the C library's strcoll (and under en_US.UTF-8 its linguistic rules); identifiers are never ordered
-- for people, so "C" (byte order, the same equality) does the same work for less. tenant_id keeps the database's
-- collation: it is joined with every other table's tenant_id, whose indexes must keep matching it, and its
-- comparisons are nearly all between equal values, which never reach strcoll. The reporter's two orderings of
-- these columns for people (a session's event types and tools) ask for the database's collation explicitly, so
-- what they show does not change; so does its join of a session's rows with report_sessions.
--
-- The append-only trigger names every column but sequence_conflict (0760_sequence_conflicts.sql) and a column
-- named by a trigger cannot change type: it is dropped and made again, as 0760 makes it (now naming
-- content_digest too, which 0950 added after it).
DROP TRIGGER audit_logs_append_only ON audit_logs;
-- Replaced below; dropped first so that it is not rebuilt on the way.
DROP INDEX audit_logs_decision_feed_idx;

ALTER TABLE audit_logs
    ALTER COLUMN event_id TYPE text COLLATE "C",
    ALTER COLUMN session_id TYPE text COLLATE "C",
    ALTER COLUMN user_email TYPE text COLLATE "C",
    ALTER COLUMN user_id TYPE text COLLATE "C",
    ALTER COLUMN event_type TYPE text COLLATE "C",
    ALTER COLUMN decision TYPE text COLLATE "C",
    ALTER COLUMN tool_name TYPE text COLLATE "C";

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

-- 2. The decision index keeps the decisions worth finding, not the accepts: nearly every tool decision is an
-- accept, and a page of accepts is found within a few pages of the unfiltered feed index, read newest first and
-- filtered (as 0980_type_feed_index.sql does for the commonest event types). Rejects and any other decision may
-- be rare, where that walk could read the tenant's every row. The reporter's feed query repeats this predicate,
-- word for word, when it filters by one of them (services/reporter/queries.py, INDEXED_DECISIONS).
CREATE INDEX audit_logs_decision_feed_idx ON audit_logs (tenant_id, decision, event_time DESC, id DESC)
    WHERE decision <> 'accept';

-- 3. No deduplication where no two entries are equal: the feed indexes end with id, and a session rarely claims
-- a sequence twice. A full page was first scanned for duplicates to merge, in vain, before every split. Existing
-- entries stay as they are.
ALTER INDEX audit_logs_feed_idx SET (deduplicate_items = off);
ALTER INDEX audit_logs_user_key_feed_idx SET (deduplicate_items = off);
ALTER INDEX audit_logs_type_feed_idx SET (deduplicate_items = off);
ALTER INDEX audit_logs_decision_feed_idx SET (deduplicate_items = off);
ALTER INDEX audit_logs_tool_feed_idx SET (deduplicate_items = off);
ALTER INDEX audit_logs_session_idx SET (deduplicate_items = off);

-- 4. Large content (a long prompt, a tool's output) is compressed with lz4 where this PostgreSQL has it: less CPU
-- than the default pglz to compress and to read back. Values already stored keep their method.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE audit_content ALTER COLUMN content SET COMPRESSION lz4;
    END IF;
END
$$;

-- Changing a column's collation drops its statistics: the planner gets them back now rather than at the next
-- autovacuum analyze.
ANALYZE audit_logs (event_id, session_id, user_email, user_id, event_type, decision, tool_name);
