-- Who may read the audit log (issue: reporting credentials apart from ingest, roles, a portal login).
--
-- Reporting tokens are bearer secrets for the reporter, one per person or tool, each bound to one tenant
-- and one role. Only a SHA-256 of the token is kept (the token is 256 random bits, so a slow hash adds
-- nothing), and the token is shown once, when it is issued.
CREATE TABLE reporting_tokens (
    token_id      text PRIMARY KEY,
    tenant_id     text NOT NULL,
    org_id        text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'auditor', 'analyst', 'developer')),
    user_email    text,
    secret_sha256 bytea NOT NULL CHECK (length(secret_sha256) = 32),
    description   text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    revoked_by    text,
    -- A developer token reads only the rows of its own e-mail, so it must name one.
    CHECK (role <> 'developer' OR user_email IS NOT NULL)
);
CREATE INDEX reporting_tokens_tenant_idx ON reporting_tokens (tenant_id, created_at);

-- Portal sign-ins. The cookie holds a random id; only its SHA-256 is stored, with the principal it stands
-- for, so logout and revocation end it at once on every reporter replica.
CREATE TABLE portal_sessions (
    session_sha256   bytea PRIMARY KEY CHECK (length(session_sha256) = 32),
    tenant_id        text NOT NULL,
    org_id           text NOT NULL,
    role             text NOT NULL CHECK (role IN ('admin', 'auditor', 'analyst', 'developer')),
    user_email       text,
    subject          text NOT NULL,
    credential       text NOT NULL CHECK (credential IN ('token', 'oidc')),
    token_id         text REFERENCES reporting_tokens (token_id),
    csrf_token       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    ended_at         timestamptz
);
CREATE INDEX portal_sessions_expiry_idx ON portal_sessions (expires_at);
