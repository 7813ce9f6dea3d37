-- Least privilege: one PostgreSQL role per component, and audit_logs / chain_checkpoints append-only.
--
-- The roles are created (and their table privileges granted) by shared/db/privileges.sql, which runs after
-- every migration run: roles are cluster-wide, so a database restored onto another server, or a second
-- database on the same server, gets them too. This migration only installs the pieces that belong to
-- this database's schema.

-- Creates the component roles that do not exist yet. Several databases on one server may migrate at the
-- same moment (each under its own advisory lock, which is per database): two of them can both see a role
-- missing, and the second CREATE ROLE then fails on pg_authid's unique index once the first commits.
-- Each creation therefore runs in its own exception block and treats "already there" as done.
CREATE FUNCTION audit_ensure_roles(role_names text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY role_names LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name);
        BEGIN
            -- LOGIN without a password: usable with trust or certificate authentication as it stands;
            -- elsewhere an operator sets a password (auditctl migrate with DB_ROLE_PASSWORDS_DIR).
            EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT', role_name);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile by another database's migration
        END;
    END LOOP;
END
$$;

-- The second line of defence behind the privileges: even a role that was granted UPDATE, DELETE or
-- TRUNCATE by mistake cannot change a signed row or checkpoint. Statement level, so the refusal does not
-- depend on whether a row matched. (A superuser can still disable triggers; verify catches what follows.)
CREATE FUNCTION audit_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_logs_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

CREATE TRIGGER chain_checkpoints_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON chain_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
