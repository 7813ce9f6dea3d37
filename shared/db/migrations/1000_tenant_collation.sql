-- Tenant ids compare as bytes (docs/operations/sizing.md, "What one signed row costs"), as the other identifier
-- columns of audit_logs do since 0990_append_cost.sql. Every index of audit_logs but two starts with tenant_id,
-- so each row the signer appends is compared on the way down each of them with the entries of other tenants
-- wherever their runs meet, and in the database's collation every comparison of two different strings goes
-- through the C library's strcoll. "C" is byte order with the same equality; tenant ids are never ordered for
-- people by the database (auditctl's exports that list several tenants ask for the database's collation
-- explicitly, so what they print does not change). Every table's tenant_id moves together, so that joins and
-- lookups between tables keep comparing in one collation and keep using each table's index on it;
-- tests/integration/test_tenant_collation.py holds every table, now and later, to it.
--
-- On an existing database: the columns keep their type, so no row is rewritten, but every index whose key
-- includes tenant_id is rebuilt: seven of audit_logs (all but the primary key and event_id's), the primary keys
-- of merkle_subtrees and audit_content (about a row for each row of audit_logs), usage_points' two and the
-- reporting tables' own. All of that runs under ACCESS EXCLUSIVE locks, taken below on every table at once and
-- held until the migration commits, which holds the signer, the reporter and the usage consumer meanwhile:
-- about 40 seconds for 2,000,000 rows of audit_logs, with as many of audit_content, on a busy two-core machine
-- (most of it the seven indexes of audit_logs; rebuilding an index sorts in maintenance_work_mem, and needs up
-- to its own size on disk until the old one is dropped at commit). Best run with those services stopped: one that holds a lock on one of these
-- tables while waiting for another can deadlock with the migration, and then PostgreSQL aborts one of the two
-- (the services retry; the migration is all or nothing and can be run again).

LOCK TABLE audit_logs, chain_heads, audit_content, merkle_subtrees, chain_checkpoints, key_activations,
    checkpoint_witness_cursor, licenses, detection_postures, content_erasures, report_fold_progress,
    report_sessions, report_usage_daily, report_users, report_usage_cumulative, report_model_daily,
    report_chain_status, usage_metric_cumulative, usage_series, usage_points, usage_metric_model_daily,
    reporting_tokens, portal_sessions
    IN ACCESS EXCLUSIVE MODE;

-- The append-only trigger names every column of audit_logs but sequence_conflict, and a column named by a
-- trigger cannot change type: it is dropped and made again, as 0990 makes it.
DROP TRIGGER audit_logs_append_only ON audit_logs;

ALTER TABLE audit_logs ALTER COLUMN tenant_id TYPE text COLLATE "C";

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

-- Written with the rows, in the signer's transaction.
ALTER TABLE chain_heads ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE audit_content ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE merkle_subtrees ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE chain_checkpoints ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE key_activations ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE checkpoint_witness_cursor ALTER COLUMN tenant_id TYPE text COLLATE "C";
-- Ingest, erasure and reporting.
ALTER TABLE licenses ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE detection_postures ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE content_erasures ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE report_fold_progress ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE report_sessions ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE report_usage_daily ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE report_users ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE report_usage_cumulative ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE report_model_daily ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE report_chain_status ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE usage_metric_cumulative ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE usage_series ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE usage_points ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE usage_metric_model_daily ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE reporting_tokens ALTER COLUMN tenant_id TYPE text COLLATE "C";
ALTER TABLE portal_sessions ALTER COLUMN tenant_id TYPE text COLLATE "C";

-- Changing a column's collation drops its statistics: the planner gets them back now rather than at the next
-- autovacuum analyze.
ANALYZE audit_logs (tenant_id);
ANALYZE chain_heads (tenant_id);
ANALYZE audit_content (tenant_id);
ANALYZE merkle_subtrees (tenant_id);
ANALYZE chain_checkpoints (tenant_id);
ANALYZE key_activations (tenant_id);
ANALYZE checkpoint_witness_cursor (tenant_id);
ANALYZE licenses (tenant_id);
ANALYZE detection_postures (tenant_id);
ANALYZE content_erasures (tenant_id);
ANALYZE report_fold_progress (tenant_id);
ANALYZE report_sessions (tenant_id);
ANALYZE report_usage_daily (tenant_id);
ANALYZE report_users (tenant_id);
ANALYZE report_usage_cumulative (tenant_id);
ANALYZE report_model_daily (tenant_id);
ANALYZE report_chain_status (tenant_id);
ANALYZE usage_metric_cumulative (tenant_id);
ANALYZE usage_series (tenant_id);
ANALYZE usage_points (tenant_id);
ANALYZE usage_metric_model_daily (tenant_id);
ANALYZE reporting_tokens (tenant_id);
ANALYZE portal_sessions (tenant_id);
