-- Reporting (services/reporter) and usage from metrics (services/usage).
--
-- audit_logs stays the single source of truth. Everything below is derived from it (or from the raw
-- metric topic) and can be rebuilt: truncate the derived tables and delete the progress rows.
--
-- "User" in every report is one key: the e-mail when Claude Code knows it (signed in with a Claude
-- account), otherwise its user.id. The expression is spelled the same way in the queries, so the planner
-- matches the expression index below.

-- Decisions feed, newest first, per filter. The feed without filters uses audit_logs_feed_idx (0001), a
-- session's feed audit_logs_session_idx (0001).
-- Each index below lets a filtered first page or deep cursor read only its LIMIT rows in index order,
-- instead of walking the tenant's whole feed and discarding what does not match.
CREATE INDEX audit_logs_user_key_feed_idx
    ON audit_logs (tenant_id, (coalesce(user_email, user_id)), event_time DESC, id DESC);
CREATE INDEX audit_logs_type_feed_idx
    ON audit_logs (tenant_id, event_type, event_time DESC, id DESC);
-- Decisions and tools are a small share of the rows; partial indexes keep these two small.
CREATE INDEX audit_logs_decision_feed_idx
    ON audit_logs (tenant_id, decision, event_time DESC, id DESC) WHERE decision IS NOT NULL;
CREATE INDEX audit_logs_tool_feed_idx
    ON audit_logs (tenant_id, tool_name, event_time DESC, id DESC) WHERE tool_name IS NOT NULL;

-- How far the reporter has folded each tenant's chain into the rollups below. A tenant's chain rows
-- become visible as a contiguous prefix (the signer appends under a lock on chain_heads and commits
-- rows and head together), so "everything up to folded_seq is in the rollups" is exact.
CREATE TABLE report_fold_progress (
    tenant_id   text PRIMARY KEY,
    folded_seq  bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per session: the session list reads it by index instead of grouping raw rows.
CREATE TABLE report_sessions (
    tenant_id         text NOT NULL,
    session_id        text NOT NULL,
    user_key          text NOT NULL DEFAULT '',
    user_id           text,
    user_email        text,
    plane             text NOT NULL,
    first_event_time  timestamptz NOT NULL,
    last_event_time   timestamptz NOT NULL,
    events            bigint NOT NULL DEFAULT 0,
    prompts           bigint NOT NULL DEFAULT 0,
    api_calls         bigint NOT NULL DEFAULT 0,
    api_errors        bigint NOT NULL DEFAULT 0,
    tool_calls        bigint NOT NULL DEFAULT 0,
    tool_failures     bigint NOT NULL DEFAULT 0,
    tool_accepts      bigint NOT NULL DEFAULT 0,
    tool_rejects      bigint NOT NULL DEFAULT 0,
    input_tokens      bigint NOT NULL DEFAULT 0,
    output_tokens     bigint NOT NULL DEFAULT 0,
    cache_read_tokens bigint NOT NULL DEFAULT 0,
    cache_creation_tokens bigint NOT NULL DEFAULT 0,
    cost              numeric(20, 6) NOT NULL DEFAULT 0,
    content_captured  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, session_id)
);
CREATE INDEX report_sessions_recent_idx ON report_sessions (tenant_id, last_event_time DESC, session_id DESC);
-- Counting a window's active sessions per user reads this index only (no table rows).
CREATE INDEX report_sessions_active_idx
    ON report_sessions (tenant_id, last_event_time) INCLUDE (first_event_time, user_key);
CREATE INDEX report_sessions_user_idx
    ON report_sessions (tenant_id, user_key, last_event_time DESC, session_id DESC);

-- Usage per UTC day, user and session: the event figures, which the reporter folds from audit_logs, and the
-- metric figures (m_*), which the usage consumer adds from Claude Code's metrics. One table, so usage by user
-- over 30 days is one scan of about one row per user and active day (20,000 for 1,000 users), not one per
-- model or metric as well. Every row of a session counts for the session's user (its first known user key).
CREATE TABLE report_usage_daily (
    tenant_id         text NOT NULL,
    day               date NOT NULL,
    user_key          text NOT NULL,
    session_id        text NOT NULL,
    events            bigint NOT NULL DEFAULT 0,
    prompts           bigint NOT NULL DEFAULT 0,
    api_calls         bigint NOT NULL DEFAULT 0,
    api_errors        bigint NOT NULL DEFAULT 0,
    tool_calls        bigint NOT NULL DEFAULT 0,
    tool_failures     bigint NOT NULL DEFAULT 0,
    tool_accepts      bigint NOT NULL DEFAULT 0,
    tool_rejects      bigint NOT NULL DEFAULT 0,
    input_tokens      bigint NOT NULL DEFAULT 0,
    output_tokens     bigint NOT NULL DEFAULT 0,
    cache_read_tokens bigint NOT NULL DEFAULT 0,
    cache_creation_tokens bigint NOT NULL DEFAULT 0,
    cost              numeric(20, 6) NOT NULL DEFAULT 0,
    m_points                 double precision NOT NULL DEFAULT 0,
    m_cost                   double precision NOT NULL DEFAULT 0,
    m_input_tokens           double precision NOT NULL DEFAULT 0,
    m_output_tokens          double precision NOT NULL DEFAULT 0,
    m_cache_read_tokens      double precision NOT NULL DEFAULT 0,
    m_cache_creation_tokens  double precision NOT NULL DEFAULT 0,
    m_sessions_started       double precision NOT NULL DEFAULT 0,
    m_lines_added            double precision NOT NULL DEFAULT 0,
    m_lines_removed          double precision NOT NULL DEFAULT 0,
    m_commits                double precision NOT NULL DEFAULT 0,
    m_pull_requests          double precision NOT NULL DEFAULT 0,
    m_edit_accepts           double precision NOT NULL DEFAULT 0,
    m_edit_rejects           double precision NOT NULL DEFAULT 0,
    m_active_user_seconds    double precision NOT NULL DEFAULT 0,
    m_active_cli_seconds     double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, user_key, session_id)
);
CREATE INDEX report_usage_daily_session_idx ON report_usage_daily (tenant_id, session_id);

-- Running totals per user: the row of a day holds the user's totals from the start up to and including that
-- day. Usage over any window of days is then two index look-ups per user (the last row before the window's
-- end minus the last row before its start), whatever the number of days or sessions, which is what keeps
-- usage by user over 30 days fast for a thousand users. A row exists for each day the user was active;
-- folding a day's usage adds it to that day's row and to every later row of the user (usually none).
-- Events (the reporter's fold) and metrics (the usage consumer) keep separate tables: two writers never
-- contend for one row.
CREATE TABLE report_users (
    tenant_id   text NOT NULL,
    user_key    text NOT NULL,
    first_day   date NOT NULL,
    last_day    date NOT NULL,
    PRIMARY KEY (tenant_id, user_key)
);

CREATE TABLE report_usage_cumulative (
    tenant_id         text NOT NULL,
    user_key          text NOT NULL,
    day               date NOT NULL,
    events            bigint NOT NULL DEFAULT 0,
    prompts           bigint NOT NULL DEFAULT 0,
    api_calls         bigint NOT NULL DEFAULT 0,
    api_errors        bigint NOT NULL DEFAULT 0,
    tool_calls        bigint NOT NULL DEFAULT 0,
    tool_failures     bigint NOT NULL DEFAULT 0,
    tool_accepts      bigint NOT NULL DEFAULT 0,
    tool_rejects      bigint NOT NULL DEFAULT 0,
    input_tokens      bigint NOT NULL DEFAULT 0,
    output_tokens     bigint NOT NULL DEFAULT 0,
    cache_read_tokens bigint NOT NULL DEFAULT 0,
    cache_creation_tokens bigint NOT NULL DEFAULT 0,
    cost              numeric(24, 6) NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, user_key, day)
);

CREATE TABLE usage_metric_cumulative (
    tenant_id                text NOT NULL,
    user_key                 text NOT NULL,
    day                      date NOT NULL,
    m_points                 double precision NOT NULL DEFAULT 0,
    m_cost                   double precision NOT NULL DEFAULT 0,
    m_input_tokens           double precision NOT NULL DEFAULT 0,
    m_output_tokens          double precision NOT NULL DEFAULT 0,
    m_cache_read_tokens      double precision NOT NULL DEFAULT 0,
    m_cache_creation_tokens  double precision NOT NULL DEFAULT 0,
    m_sessions_started       double precision NOT NULL DEFAULT 0,
    m_lines_added            double precision NOT NULL DEFAULT 0,
    m_lines_removed          double precision NOT NULL DEFAULT 0,
    m_commits                double precision NOT NULL DEFAULT 0,
    m_pull_requests          double precision NOT NULL DEFAULT 0,
    m_edit_accepts           double precision NOT NULL DEFAULT 0,
    m_edit_rejects           double precision NOT NULL DEFAULT 0,
    m_active_user_seconds    double precision NOT NULL DEFAULT 0,
    m_active_cli_seconds     double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, user_key, day)
);

-- Usage per UTC day and model (API requests and errors carry the model): a few rows per day.
CREATE TABLE report_model_daily (
    tenant_id         text NOT NULL,
    day               date NOT NULL,
    model             text NOT NULL,
    api_calls         bigint NOT NULL DEFAULT 0,
    api_errors        bigint NOT NULL DEFAULT 0,
    input_tokens      bigint NOT NULL DEFAULT 0,
    output_tokens     bigint NOT NULL DEFAULT 0,
    cache_read_tokens bigint NOT NULL DEFAULT 0,
    cache_creation_tokens bigint NOT NULL DEFAULT 0,
    cost              numeric(20, 6) NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, model)
);

-- The reporter's incremental chain check: a frontier that follows new rows, and a rescan cursor that
-- walks the whole chain again and again, so a row altered after it was first checked is still caught.
CREATE TABLE report_chain_status (
    tenant_id          text PRIMARY KEY,
    verified_seq       bigint NOT NULL DEFAULT 0,
    verified_hash      bytea NOT NULL,
    rescan_seq         bigint NOT NULL DEFAULT 0,
    rescan_hash        bytea NOT NULL,
    last_full_pass_at  timestamptz,
    status             text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ok', 'broken')),
    break_seq          bigint,
    break_kind         text,
    break_detail       text,
    checked_at         timestamptz NOT NULL DEFAULT now()
);

-- Metrics (services/usage). Cumulative series: the start time and last value seen, to derive deltas.
CREATE TABLE usage_series (
    tenant_id      text NOT NULL,
    series_id      text NOT NULL,
    metric         text NOT NULL,
    start_time_ns  bigint NOT NULL,
    last_time_ns   bigint NOT NULL,
    last_value     double precision NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, series_id)
);

-- Every data point once, keyed by series and timestamp: a redelivered batch inserts nothing new.
CREATE TABLE usage_points (
    tenant_id      text NOT NULL,
    series_id      text NOT NULL,
    time_ns        bigint NOT NULL,
    org_id         text NOT NULL,
    metric         text NOT NULL,
    temporality    text NOT NULL CHECK (temporality IN ('delta', 'cumulative')),
    start_time_ns  bigint NOT NULL,
    point_time     timestamptz NOT NULL,
    value          double precision NOT NULL,
    delta          double precision NOT NULL,
    user_key       text NOT NULL,
    user_id        text,
    user_email     text,
    session_id     text NOT NULL,
    model          text NOT NULL,
    kind           text NOT NULL,
    tool_name      text,
    attributes     jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (tenant_id, series_id, time_ns)
);
CREATE INDEX usage_points_session_idx ON usage_points (tenant_id, session_id, point_time);

-- Metric figures by UTC day and model (cost and tokens carry the model), written by the usage consumer
-- in the transaction that inserts the points; the per-user figures go to report_usage_daily's m_* columns.
CREATE TABLE usage_metric_model_daily (
    tenant_id              text NOT NULL,
    day                    date NOT NULL,
    model                  text NOT NULL,
    cost                   double precision NOT NULL DEFAULT 0,
    input_tokens           double precision NOT NULL DEFAULT 0,
    output_tokens          double precision NOT NULL DEFAULT 0,
    cache_read_tokens      double precision NOT NULL DEFAULT 0,
    cache_creation_tokens  double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, model)
);
