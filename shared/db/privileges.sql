-- Who may do what, in one place. Applied after every migration run (shared/db/migrate.py), in the same
-- transaction: every component role loses all its table privileges, then gets exactly the ones below.
-- A line removed here is a privilege removed on the next run; a table added by a migration needs a line
-- here, or no component can use it (tests/integration/test_db_privileges.py fails for a table without one).
--
-- The table of roles and what they may do is in docs/operations/database-roles.md; keep both in step.
-- audit_logs and chain_checkpoints are append-only for every role: nobody is granted UPDATE, DELETE or
-- TRUNCATE on them, and a trigger (0620_roles.sql) refuses those statements whatever was granted. The one
-- exception: the signer may set audit_logs.sequence_conflict to true (0760_sequence_conflicts.sql).
-- audit_content may be erased (DELETE, audit_admin only), never changed (a trigger, 0950_content_erasure.sql).

SELECT audit_ensure_roles(ARRAY[
    'audit_receiver', 'audit_redactor', 'audit_signer', 'audit_reporter', 'audit_usage', 'audit_admin'
]);

DO $$
DECLARE
    component_roles constant text[] := ARRAY[
        'audit_receiver', 'audit_redactor', 'audit_signer', 'audit_reporter', 'audit_usage', 'audit_admin'
    ];
    grant_entry record;
BEGIN
    -- Start from nothing, so what follows is the whole truth.
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %s',
                   (SELECT string_agg(quote_ident(r), ', ') FROM unnest(component_roles) r));
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM %s',
                   (SELECT string_agg(quote_ident(r), ', ') FROM unnest(component_roles) r));
    -- Creating roles is the migration runner's business, never a component's.
    REVOKE ALL ON FUNCTION audit_ensure_roles(text[]) FROM PUBLIC;
    EXECUTE format('GRANT USAGE ON SCHEMA public TO %s',
                   (SELECT string_agg(quote_ident(r), ', ') FROM unnest(component_roles) r));

    FOR grant_entry IN
        SELECT * FROM (VALUES
            -- table                      role              privileges
            -- Ingest: licences are verified offline; the receiver reads only the revocation list.
            ('licenses',                  'audit_receiver', 'SELECT'),
            -- The redactor reads each tenant's detection posture.
            ('detection_postures',        'audit_redactor', 'SELECT'),
            -- The signer: dedupe and append rows, move heads and its Kafka offsets in the same transaction,
            -- write checkpoints and publish them to the witness (its cursor), and activate a key an
            -- operator enrolled (it reads signing_keys; only auditctl keys enroll adds to it).
            ('audit_logs',                'audit_signer',   'SELECT, INSERT'),
            ('chain_heads',               'audit_signer',   'SELECT, INSERT, UPDATE'),
            ('signer_offsets',            'audit_signer',   'SELECT, INSERT, UPDATE'),
            ('chain_checkpoints',         'audit_signer',   'SELECT, INSERT'),
            ('signing_keys',              'audit_signer',   'SELECT'),
            ('key_activations',           'audit_signer',   'SELECT, INSERT'),
            ('merkle_subtrees',           'audit_signer',   'SELECT, INSERT'),
            ('checkpoint_witness_cursor', 'audit_signer',   'SELECT, INSERT, UPDATE'),
            -- The content of hash version 2 rows, written with them (docs/auditing.md, "Hash version 2").
            ('audit_content',             'audit_signer',   'SELECT, INSERT'),
            -- The reporter reads the signed record and writes only its own rollups and chain check.
            ('audit_logs',                'audit_reporter', 'SELECT'),
            ('chain_heads',               'audit_reporter', 'SELECT'),
            ('chain_checkpoints',         'audit_reporter', 'SELECT'),
            ('signing_keys',              'audit_reporter', 'SELECT'),
            ('key_activations',           'audit_reporter', 'SELECT'),
            ('licenses',                  'audit_reporter', 'SELECT'),
            ('report_fold_progress',      'audit_reporter', 'SELECT, INSERT, UPDATE'),
            ('report_sessions',           'audit_reporter', 'SELECT, INSERT, UPDATE'),
            ('report_usage_daily',        'audit_reporter', 'SELECT, INSERT, UPDATE'),
            ('report_users',              'audit_reporter', 'SELECT, INSERT, UPDATE'),
            ('report_usage_cumulative',   'audit_reporter', 'SELECT, INSERT, UPDATE'),
            ('report_model_daily',        'audit_reporter', 'SELECT, INSERT, UPDATE'),
            ('report_chain_status',       'audit_reporter', 'SELECT, INSERT, UPDATE'),
            ('usage_metric_cumulative',   'audit_reporter', 'SELECT'),
            ('usage_metric_model_daily',  'audit_reporter', 'SELECT'),
            ('usage_points',              'audit_reporter', 'SELECT'),
            ('usage_series',              'audit_reporter', 'SELECT'),
            ('merkle_subtrees',           'audit_reporter', 'SELECT'),
            ('checkpoint_witness_cursor', 'audit_reporter', 'SELECT'),
            ('audit_content',             'audit_reporter', 'SELECT'),
            ('content_erasures',          'audit_reporter', 'SELECT'),
            -- Reporting credentials: tokens (issued and revoked by admins through the API) and portal sessions.
            ('reporting_tokens',          'audit_reporter', 'SELECT, INSERT, UPDATE'),
            ('portal_sessions',           'audit_reporter', 'SELECT, INSERT, UPDATE'),
            -- The usage consumer: metric points and series, and the metric columns of the usage rollups.
            ('usage_series',              'audit_usage',    'SELECT, INSERT, UPDATE'),
            ('usage_points',              'audit_usage',    'SELECT, INSERT'),
            ('usage_metric_model_daily',  'audit_usage',    'SELECT, INSERT, UPDATE'),
            ('usage_metric_cumulative',   'audit_usage',    'SELECT, INSERT, UPDATE'),
            ('report_usage_daily',        'audit_usage',    'SELECT, INSERT, UPDATE'),
            ('report_users',              'audit_usage',    'SELECT, INSERT, UPDATE'),
            -- auditctl (operators and auditors): reads everything; issues and revokes licences and reporting
            -- tokens, sets postures, enrols and retires keys. It never changes a signed row or checkpoint.
            ('audit_logs',                'audit_admin',    'SELECT'),
            ('chain_heads',               'audit_admin',    'SELECT'),
            ('chain_checkpoints',         'audit_admin',    'SELECT'),
            ('signing_keys',              'audit_admin',    'SELECT, INSERT, UPDATE'),
            ('key_activations',           'audit_admin',    'SELECT'),
            ('signer_offsets',            'audit_admin',    'SELECT'),
            ('licenses',                  'audit_admin',    'SELECT, INSERT, UPDATE'),
            ('detection_postures',        'audit_admin',    'SELECT, INSERT, UPDATE'),
            ('report_fold_progress',      'audit_admin',    'SELECT'),
            ('report_sessions',           'audit_admin',    'SELECT'),
            ('report_usage_daily',        'audit_admin',    'SELECT'),
            ('report_users',              'audit_admin',    'SELECT'),
            ('report_usage_cumulative',   'audit_admin',    'SELECT'),
            ('report_model_daily',        'audit_admin',    'SELECT'),
            ('report_chain_status',       'audit_admin',    'SELECT'),
            ('usage_series',              'audit_admin',    'SELECT'),
            ('usage_points',              'audit_admin',    'SELECT'),
            ('usage_metric_model_daily',  'audit_admin',    'SELECT'),
            ('usage_metric_cumulative',   'audit_admin',    'SELECT'),
            ('merkle_subtrees',           'audit_admin',    'SELECT'),
            ('checkpoint_witness_cursor', 'audit_admin',    'SELECT'),
            -- auditctl erase: the one DELETE any role has, on content kept apart from the signed rows (whose
            -- digests stay); the reporter's note of each erasure goes with it.
            ('audit_content',             'audit_admin',    'SELECT, DELETE'),
            ('content_erasures',          'audit_admin',    'SELECT, INSERT'),
            ('reporting_tokens',          'audit_admin',    'SELECT, INSERT, UPDATE'),
            ('portal_sessions',           'audit_admin',    'SELECT, UPDATE'),
            ('schema_migrations',         'audit_admin',    'SELECT')
        ) AS matrix (table_name, role_name, privileges)
    LOOP
        -- A line for a table that a later migration has not created yet is skipped, not an error.
        CONTINUE WHEN to_regclass(format('public.%I', grant_entry.table_name)) IS NULL;
        EXECUTE format('GRANT %s ON TABLE public.%I TO %I',
                       grant_entry.privileges, grant_entry.table_name, grant_entry.role_name);
    END LOOP;
    -- The one change to a signed row: the signer flags rows whose session sequence another event claims
    -- (0760_sequence_conflicts.sql; a trigger allows false -> true of that column only).
    REVOKE UPDATE ON audit_logs FROM audit_signer;
    IF EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'public.audit_logs'::regclass
                                          AND attname = 'sequence_conflict' AND NOT attisdropped) THEN
        GRANT UPDATE (sequence_conflict) ON audit_logs TO audit_signer;
    END IF;
END
$$;
