"""The metric columns of the usage tables (0400_reporting.sql): what the usage consumer (services/usage) writes
and the reporter (services/reporter) reads, kept here so neither service imports the other."""

from __future__ import annotations

from collections.abc import Mapping

# Where each (metric, kind) is summed in report_usage_daily; a kind not listed (a token type added by a
# newer CLI) is kept in usage_points only.
DAILY_COLUMN: Mapping[tuple[str, str], str] = {
    ("cost.usage", ""): "m_cost",
    ("token.usage", "input"): "m_input_tokens",
    ("token.usage", "output"): "m_output_tokens",
    ("token.usage", "cacheRead"): "m_cache_read_tokens",
    ("token.usage", "cacheCreation"): "m_cache_creation_tokens",
    ("session.count", ""): "m_sessions_started",
    ("lines_of_code.count", "added"): "m_lines_added",
    ("lines_of_code.count", "removed"): "m_lines_removed",
    ("commit.count", ""): "m_commits",
    ("pull_request.count", ""): "m_pull_requests",
    ("code_edit_tool.decision", "accept"): "m_edit_accepts",
    ("code_edit_tool.decision", "reject"): "m_edit_rejects",
    ("active_time.total", "user"): "m_active_user_seconds",
    ("active_time.total", "cli"): "m_active_cli_seconds",
}
# m_points counts the points summed into a row: a group has metrics when it is not zero.
DAILY_COLUMNS = ("m_points", *dict.fromkeys(DAILY_COLUMN.values()))
MODEL_COLUMNS = ("cost", "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")


