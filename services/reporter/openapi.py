"""The OpenAPI 3.1 document of the reporting API, written out rather than inferred, so it is the contract."""

from __future__ import annotations

import copy
from typing import Any

from services.reporter.authz import ROLE_PERMISSIONS, find_rule
from shared.reporting_tokens import ROLES

API_PREFIX = "/api/v1"


def _param(name: str, description: str, schema: dict[str, Any] | None = None, *, where: str = "query",
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "description": description,
            "schema": schema or {"type": "string"}}


_TIME = {"type": "string", "format": "date-time"}
_SINCE = _param("since", "Only rows at or after this time (ISO 8601; a date means 00:00 UTC).", _TIME)
_UNTIL = _param("until", "Only rows before this time (ISO 8601; a date means 00:00 UTC).", _TIME)
_LIMIT = _param("limit", "Rows per page (default 50).", {"type": "integer", "minimum": 1})
_CURSOR = _param("cursor", "The next_cursor of the previous page; opaque.")
_USER = _param("user", "The user's e-mail when Claude Code knows it, otherwise its user.id.")

_MONEY = {"type": "string", "pattern": r"^-?\d+\.\d{6}$", "description": "US dollars, six decimal places."}
_NULLABLE_STRING = {"type": ["string", "null"]}
_TOKENS = {
    "type": "object",
    "properties": {k: {"type": ["integer", "null"]} for k in ("input", "output", "cache_read", "cache_creation",
                                                             "total")},
}
# Set where a row's content was erased (auditctl erase); content is then null.
_ERASURE: dict[str, Any] = {
    "type": ["object", "null"],
    "description": "null unless the row's content was erased; then content is null and text reads "
                   "'erased on YYYY-MM-DD (reason)'.",
    "properties": {"erased_at": {"type": "string"}, "erased_by": {"type": "string"}, "reason": {"type": "string"},
                   "erasure_event_id": {"type": "string"}, "text": {"type": "string"}},
}

_USER_SCHEMA = {
    "type": "object",
    "properties": {"key": _NULLABLE_STRING, "id": _NULLABLE_STRING, "email": _NULLABLE_STRING,
                   "account_uuid": _NULLABLE_STRING},
}
_METRICS = {
    "type": ["object", "null"],
    "description": "Figures only Claude Code's metrics carry; null when no metrics were ingested for the group.",
    "properties": {
        "cost": _MONEY,
        "tokens": _TOKENS,
        "sessions_started": {"type": "integer"},
        "lines_of_code": {"type": "object", "properties": {"added": {"type": "integer"},
                                                           "removed": {"type": "integer"}}},
        "commits": {"type": "integer"},
        "pull_requests": {"type": "integer"},
        "active_time_seconds": {"type": "object", "properties": {k: {"type": "number"}
                                                                 for k in ("user", "cli", "total")}},
        "code_edit_decisions": {"type": "object"},
    },
}
_COUNTS = {
    "events": {"type": "integer"},
    "prompts": {"type": "integer"},
    "api_calls": {"type": "integer"},
    "errors": {"type": "integer", "description": "API errors."},
    "tool_calls": {"type": "integer"},
    "tool_failures": {"type": "integer"},
    "tool_decisions": {"type": "object", "properties": {"accepted": {"type": "integer"},
                                                        "rejected": {"type": "integer"}}},
    "tool_acceptance_rate": {"type": ["number", "null"]},
    "tokens": _TOKENS,
    "cost": _MONEY,
}

_COMPLETENESS_FIGURES = {
    "expected": {"type": "integer", "description": "Sequence numbers 0 to the highest received: highest + 1."},
    "received": {"type": "integer", "description": "Distinct sequence numbers among the signed rows."},
    "missing": {"type": "integer", "description": "expected - received: events sent but never signed."},
    "duplicate_rows": {"type": "integer",
                       "description": "Plain duplicates: unflagged numbered rows beyond one per sequence number "
                       "(the signer flags every such group: one is a missing flag, which verification reports)."},
    "sequence_conflicts": {"type": "integer",
                           "description": "Sequence numbers whose rows are flagged sequence_conflict: different "
                           "events claiming one session and sequence."},
    "sequence_conflict_rows": {"type": "integer", "description": "Numbered rows flagged sequence_conflict."},
    "completeness": {"type": ["number", "null"], "description": "received / expected; null when nothing is expected."},
}
_COMPLETENESS_GROUP = {
    "type": "object",
    "properties": {"sessions": {"type": "integer"}, "sessions_with_gaps": {"type": "integer"},
                   **_COMPLETENESS_FIGURES},
}
_HEX = {"type": "string", "description": "lower-case hex"}

SCHEMAS: dict[str, Any] = {
    "SessionCompletenessFigures": {
        "type": ["object", "null"],
        "description": "A session's completeness counts (docs/auditing.md, Completeness); null when its events "
        "carry no sequence numbers.",
        "properties": _COMPLETENESS_FIGURES,
    },
    "SessionCompleteness": {
        "type": "object",
        "description": "What the client numbered (event.sequence) against what was signed, from the signed rows.",
        "required": ["numbered", "expected", "received", "missing", "missing_ranges", "duplicates",
                     "sequence_conflicts"],
        "properties": {
            "numbered": {"type": "boolean", "description": "Whether any of the session's rows carries a sequence."},
            "expected_range": {"type": ["array", "null"], "items": {"type": "integer"}, "minItems": 2,
                               "maxItems": 2, "description": "[0, highest sequence received], inclusive."},
            **_COMPLETENESS_FIGURES,
            "missing_ranges": {"type": "array", "description": "Missing sequence numbers as inclusive [first, last].",
                               "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2,
                                         "maxItems": 2}},
            "duplicates": {"type": "array", "description": "Plain duplicates: sequence numbers held by more than "
                           "one unflagged row, with that number of rows.",
                           "items": {"type": "object", "properties": {"sequence": {"type": "integer"},
                                                                      "rows": {"type": "integer"}}}},
            "sequence_conflicts": {"type": "array", "items": {"type": "integer"},
                                   "description": "The sequence numbers whose rows are flagged sequence_conflict "
                                   "(here the numbers; the figures elsewhere count them)."},
            "unnumbered_rows": {"type": "integer"},
            "out_of_range_rows": {"type": "integer", "description": "Rows with a negative sequence (ignored)."},
            "truncated": {"type": "object"},
        },
    },
    "Completeness": {
        "type": "object",
        "required": ["since", "until", "tenant", "users"],
        "properties": {
            "since": _TIME,
            "until": _TIME,
            "tenant": _COMPLETENESS_GROUP,
            "users": {"type": "array", "items": {"allOf": [
                _COMPLETENESS_GROUP,
                {"type": "object", "properties": {"user": {"type": ["string", "null"],
                                                           "description": "User key; null when unknown."}}},
            ]}},
            "total_users": {"type": "integer"},
            "offset": {"type": "integer"},
            "next_offset": {"type": ["integer", "null"]},
        },
    },
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}, "reason": {"type": "string"},
                             "wants": {"type": "string", "description": "With reason ingest_credential: the "
                                       "credential to send instead (reporting_token)."},
                             "role": {"type": "string"}, "needs": {"type": "string"}}},
    "Principal": {
        "type": "object",
        "properties": {"org_id": {"type": "string"}, "tenant_id": {"type": "string"},
                       "role": {"enum": list(ROLES)}, "subject": {"type": "string"},
                       "credential": {"enum": ["token", "oidc", "licence"]}, "user_email": _NULLABLE_STRING,
                       "sees_content": {"type": "boolean"}, "own_rows_only": {"type": "boolean"},
                       "sees_access_rows": {"type": "boolean"}},
    },
    "Token": {
        "type": "object",
        "properties": {"token_id": {"type": "string"}, "tenant_id": {"type": "string"},
                       "org_id": {"type": "string"}, "role": {"enum": list(ROLES)}, "user_email": _NULLABLE_STRING,
                       "description": {"type": "string"}, "created_at": _TIME, "created_by": {"type": "string"},
                       "expires_at": {"type": ["string", "null"], "format": "date-time"},
                       "revoked_at": {"type": ["string", "null"], "format": "date-time"},
                       "revoked_by": _NULLABLE_STRING, "status": {"enum": ["active", "expired", "revoked"]},
                       "token": {"type": "string", "description": "Only in the answer that issued it."}},
    },
    "AuditEvent": {
        "type": "object",
        "required": ["id", "event_id", "event_time", "plane", "event_type", "chain_seq", "proof"],
        "properties": {
            "id": {"type": "integer", "description": "Row id; the proof endpoint takes it."},
            "event_id": {"type": "string"},
            "event_time": _TIME,
            "received_at": _TIME,
            "plane": {"type": "string", "examples": ["claude_code", "cowork"]},
            "event_type": {"type": "string", "examples": ["user_prompt", "tool_decision", "tool_result",
                                                          "api_request", "api_error"]},
            "org_id": {"type": "string"},
            "user": _USER_SCHEMA,
            "session_id": _NULLABLE_STRING,
            "prompt_id": _NULLABLE_STRING,
            "sequence": {"type": ["integer", "null"]},
            "tool_name": _NULLABLE_STRING,
            "decision": _NULLABLE_STRING,
            "decision_source": _NULLABLE_STRING,
            "success": {"type": ["boolean", "null"]},
            "model": _NULLABLE_STRING,
            "tokens": _TOKENS,
            "cost": {"type": ["string", "null"]},
            "content": {"type": ["object", "null"], "description": "Redacted content fields; null for the analyst "
                        "role, which sees content_lengths only.",
                        "additionalProperties": {"type": "string"}},
            "erasure": _ERASURE,
            "content_lengths": {"type": "object", "additionalProperties": {"type": "integer"}},
            "content_captured": {"type": "boolean"},
            "redacted_fields": {"type": "object"},
            "attributes": {"type": ["object", "null"], "description": "null for the analyst role; on the access "
                           "plane, the access.* keys say who read what."},
            "chain_seq": {"type": "integer"},
            "sequence_conflict": {"type": "boolean", "description": "Another event of this tenant claims the same "
                                  "session and sequence; both are kept (see the auditing guide)."},
            "proof": {"type": ["string", "null"], "format": "uri-reference",
                      "description": "Link to the proof; null for roles that may not read proofs."},
        },
    },
    "AuditEventPage": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEvent"}},
                       "next_cursor": _NULLABLE_STRING,
                       "session_completeness": {
                           "type": "object", "description": "Completeness of each session on the page, by id.",
                           "additionalProperties": {"$ref": "#/components/schemas/SessionCompletenessFigures"}}},
    },
    "SessionListItem": {
        "type": "object",
        "properties": {"session_id": {"type": "string"}, "user": _USER_SCHEMA, "plane": {"type": "string"},
                       "first_event_time": _TIME, "last_event_time": _TIME,
                       "content_captured": {"type": "boolean"}, **_COUNTS,
                       "completeness": {"$ref": "#/components/schemas/SessionCompletenessFigures"}},
    },
    "SessionPage": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/SessionListItem"}},
                       "next_cursor": _NULLABLE_STRING, "rollup": {"$ref": "#/components/schemas/RollupState"}},
    },
    "SessionSummary": {
        "type": "object",
        "required": ["session_id", "user", "plane", "first_event_time", "last_event_time", "prompts", "tools",
                     "approvals", "api", "errors", "content_captured"],
        "properties": {
            "session_id": {"type": "string"},
            "user": _USER_SCHEMA,
            "plane": {"type": "string"},
            "first_event_time": _TIME,
            "last_event_time": _TIME,
            "events": {"type": "integer"},
            "event_types": {"type": "object", "additionalProperties": {"type": "integer"}},
            "content_captured": {"type": "boolean"},
            "content_withheld_events": {"type": "integer"},
            "prompts": {"type": "array", "description": "Redacted prompts in session order.",
                        "items": {"type": "object", "properties": {"id": {"type": "integer"},
                                                                   "time": _TIME, "text": _NULLABLE_STRING,
                                                                   "erasure": _ERASURE}}},
            "tools": {"type": "array", "items": {"type": "object", "properties": {
                "tool_name": {"type": "string"}, "calls": {"type": "integer"}, "succeeded": {"type": "integer"},
                "failed": {"type": "integer"}, "accepted": {"type": "integer"}, "rejected": {"type": "integer"}}}},
            "approvals": {"type": "object", "properties": {
                "accepted": {"type": "integer"}, "rejected": {"type": "integer"},
                "decisions": {"type": "array", "items": {"type": "object"}}}},
            "api": {"type": "object", "properties": {"calls": {"type": "integer"}, "models": {"type": "array"},
                                                     "tokens": _TOKENS, "cost": _MONEY}},
            "errors": {"type": "array", "items": {"type": "object"}},
            "sequence_conflicts": {
                "type": "array", "description": "Sequence numbers of this session that different events claim; "
                "every claimant is kept and listed.",
                "items": {"type": "object", "properties": {"sequence": {"type": "integer"},
                                                           "events": {"type": "array", "items": {"type": "object"}}}}},
            "metrics": _METRICS,
            "completeness": {"$ref": "#/components/schemas/SessionCompleteness"},
            "truncated": {"type": "object"},
        },
    },
    "UsageGroup": {
        "type": "object",
        "properties": {"key": {"type": ["string", "null"], "description": "User key, model or YYYY-MM-DD."},
                       "sessions": {"type": "integer"}, **_COUNTS, "metrics": _METRICS},
    },
    "Usage": {
        "type": "object",
        "required": ["group_by", "since", "until", "groups", "totals"],
        "properties": {
            "group_by": {"enum": ["user", "model", "day"]},
            "since": _TIME,
            "until": _TIME,
            "groups": {"type": "array", "items": {"$ref": "#/components/schemas/UsageGroup"}},
            "total_groups": {"type": "integer"},
            "offset": {"type": "integer"},
            "next_offset": {"type": ["integer", "null"], "description": "Offset of the next page; null at the end."},
            "totals": {"$ref": "#/components/schemas/UsageGroup"},
            "rollup": {"$ref": "#/components/schemas/RollupState"},
        },
    },
    "RollupState": {
        "type": "object",
        "properties": {"folded_through_seq": {"type": "integer"}, "head_seq": {"type": "integer"},
                       "current": {"type": "boolean"}},
    },
    "TreeHead": {
        "type": "object",
        "description": "Signed tree head (docs/auditing.md, 'Merkle proofs'): Ed25519 over the C2SP-style note "
        "'claude-audit-tree-v1/<tenant_id>, tree_size, base64 root, time <timestamp>, key <key_id>'.",
        "required": ["tenant_id", "tree_size", "root_hash", "timestamp", "key_id", "signature"],
        "properties": {"tenant_id": {"type": "string"}, "tree_size": {"type": "integer"},
                       "root_hash": _HEX, "timestamp": {"type": "string"}, "key_id": {"type": "string"},
                       "signature": _HEX},
    },
    "Inclusion": {
        "type": "object",
        "description": "RFC 9162 2.1.3 inclusion proof of the row's leaf SHA-256(0x00 || row_hash).",
        "required": ["leaf_index", "tree_size", "path", "root_hash"],
        "properties": {"leaf_index": {"type": "integer"}, "tree_size": {"type": "integer"},
                       "path": {"type": "array", "items": _HEX}, "root_hash": _HEX},
    },
    "Consistency": {
        "type": "object",
        "description": "RFC 9162 2.1.4 consistency proof, with the signed tree heads of both sizes (null where "
        "no head of that size was signed).",
        "required": ["first", "second", "first_root", "second_root", "path"],
        "properties": {"first": {"type": "integer"}, "second": {"type": "integer"}, "first_root": _HEX,
                       "second_root": _HEX, "path": {"type": "array", "items": _HEX},
                       "first_tree_head": {"oneOf": [{"$ref": "#/components/schemas/TreeHead"}, {"type": "null"}]},
                       "second_tree_head": {"oneOf": [{"$ref": "#/components/schemas/TreeHead"},
                                                      {"type": "null"}]},
                       "tenant_id": {"type": "string"}},
    },
    "Proof": {
        "type": "object",
        "required": ["record_id", "chain_seq", "canonical_bytes", "prev_hash", "row_hash", "signature",
                     "signing_key", "checkpoint", "inclusion", "tree_head"],
        "properties": {
            "inclusion": {"oneOf": [{"$ref": "#/components/schemas/Inclusion"}, {"type": "null"}],
                          "description": "Null until a signed tree head covers the row."},
            "tree_head": {"oneOf": [{"$ref": "#/components/schemas/TreeHead"}, {"type": "null"}]},
            "record_id": {"type": "integer"},
            "tenant_id": {"type": "string"},
            "event_id": {"type": "string"},
            "chain_seq": {"type": "integer"},
            "hash_version": {"type": "integer"},
            "canonical_bytes": {"type": "string", "contentEncoding": "base64"},
            "canonical_json": {"type": "string"},
            "prev_hash": {"type": "string", "description": "hex"},
            "row_hash": {"type": "string", "description": "hex"},
            "signature": {"type": "string", "contentEncoding": "base64"},
            "signing_key": {"$ref": "#/components/schemas/SigningKey"},
            "checkpoint": {
                "type": ["object", "null"],
                "description": "The latest signed checkpoint covering the row; null until one exists.",
                "properties": {
                    "chain_seq": {"type": "integer"},
                    "head_hash": {"type": "string", "description": "hex"},
                    "created_at": _TIME,
                    "key_id": {"type": "string"},
                    "public_key": {"type": ["string", "null"], "contentEncoding": "base64"},
                    "signature": {"type": "string", "contentEncoding": "base64"},
                    "message": {"type": "string", "contentEncoding": "base64",
                                "description": "The exact bytes the signature covers."},
                    "rows_after_record": {"type": "integer"},
                },
            },
            "algorithm": {"type": "object"},
            "witness": {"$ref": "#/components/schemas/WitnessEntry"},
            "server_check": {"type": "object"},
        },
    },
    "WitnessEntry": {
        "type": "object",
        "description": "The witness entry (a signed checkpoint published outside the database) that covers a row.",
        "properties": {
            "status": {"enum": ["published", "awaiting_publication", "not_checkpointed_yet", "unknown"]},
            "detail": {"type": "string"},
            "checkpoint_seq": {"type": ["integer", "null"]},
            "witness": {"type": ["string", "null"]},
            "location": {"type": ["string", "null"]},
            "published_through_seq": {"type": "integer"},
            "published_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "ChainStatus": {
        "type": "object",
        "properties": {
            "tenant_id": {"type": "string"},
            "head_seq": {"type": "integer"},
            "last_verified_seq": {"type": "integer"},
            "status": {"enum": ["ok", "pending", "broken", "unverified", "empty"]},
            "checked_at": {"type": ["string", "null"], "format": "date-time"},
            "rescan": {"type": "object"},
            "break": {"type": ["object", "null"]},
            "witness": {"$ref": "#/components/schemas/WitnessEntry"},
        },
    },
    "SigningKey": {
        "type": "object",
        "properties": {"key_id": {"type": "string"}, "algorithm": {"type": "string"},
                       "public_key": {"type": "string", "contentEncoding": "base64"},
                       "valid_from": _TIME, "valid_until": {"type": ["string", "null"], "format": "date-time"}},
    },
}


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_ERRORS = {
    "400": {"description": "A parameter is invalid.", "content": _ERROR},
    "401": {"description": "Missing, unknown, expired or revoked credentials.", "content": _ERROR},
    "403": {"description": "The caller's role may not use this endpoint (reason forbidden_for_role), or a licence "
            "was sent: licences only ingest (reason ingest_credential, wants reporting_token).", "content": _ERROR},
    "503": {"description": "The database is unavailable, the query ran over its time limit, the reporter has not "
            "loaded its revocation lists yet (not_ready), or the access trail could not be written "
            "(audit_unavailable): a read that would disclose content is refused rather than left unaudited.",
            "content": _ERROR},
}
_SECURITY: list[dict[str, list[str]]] = [{"reportingToken": []}, {"oidc": []}]


def _get(summary: str, parameters: list[dict[str, Any]], response: dict[str, Any],
         not_found: bool = False) -> dict[str, Any]:
    responses = {"200": response, **_ERRORS}
    if not_found:
        responses["404"] = {"description": "No such row for this tenant."}
    return {"get": {"summary": summary, "parameters": parameters, "responses": responses, "security": _SECURITY}}


PATHS: dict[str, Any] = {
    f"{API_PREFIX}/whoami": _get("The caller: tenant, role, and what the role sees.", [],
                                 _ok("Principal", "The caller.")),
    f"{API_PREFIX}/tokens": {
        **_get("The tenant's reporting tokens (never the tokens themselves: only digests are stored).", [],
               {"description": "The tokens.", "content": {"application/json": {"schema": {
                   "type": "object", "properties": {"items": {"type": "array", "items": {
                       "$ref": "#/components/schemas/Token"}}}}}}}),
        "post": {
            "summary": "Issue a reporting token for the caller's tenant; the answer is the only place it appears.",
            "parameters": [],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["role"],
                "properties": {"role": {"enum": list(ROLES)},
                               "user_email": {"type": "string", "description": "Required for developer."},
                               "expires_days": {"type": "integer", "minimum": 1, "maximum": 3650},
                               "description": {"type": "string", "maxLength": 200}}}}}},
            "responses": {"201": _ok("Token", "The new token, with the token itself."), **_ERRORS},
            "security": _SECURITY,
        },
    },
    f"{API_PREFIX}/tokens/{{token_id}}/revoke": {
        "post": {
            "summary": "Revoke one of the tenant's tokens; its portal sign-ins end at once, and every reporter "
            "refuses it within REVOCATION_REFRESH_SECONDS.",
            "parameters": [_param("token_id", "The token's id.", where="path")],
            "responses": {"200": {"description": "Revoked (or already revoked)."},
                          "404": {"description": "No such token in this tenant."}, **_ERRORS},
            "security": _SECURITY,
        },
    },
    f"{API_PREFIX}/audit/events": _get(
        "Decisions feed: audited events, newest first, with keyset pagination. Analysts get content as null "
        "(content_lengths stay); developers only rows of their own e-mail; the access trail (plane access) is "
        "shown to admins and auditors.",
        [_param("plane", "claude_code, cowork, or access (who read what; admins and auditors)."),
         _param("event_type", "For example tool_decision."), _USER,
         _param("session", "Session id."), _param("decision", "accept or reject."),
         _param("tool", "Tool name, for example Bash."), _SINCE, _UNTIL, _LIMIT, _CURSOR],
        _ok("AuditEventPage", "One page of events."),
    ),
    f"{API_PREFIX}/sessions": _get(
        "Sessions active in a time range, most recently active first.",
        [_USER, _SINCE, _UNTIL, _LIMIT, _CURSOR],
        _ok("SessionPage", "One page of sessions."),
    ),
    f"{API_PREFIX}/sessions/{{session_id}}": _get(
        "What happened in one session.",
        [_param("session_id", "Session id.", where="path")],
        _ok("SessionSummary", "The session summary."),
        not_found=True,
    ),
    f"{API_PREFIX}/usage": _get(
        "Usage per user, model or day, over whole UTC days (default: the last 30 days).",
        [_param("group_by", "user, model or day.", {"enum": ["user", "model", "day"]}, required=True),
         _param("since", "First day (rounded down to 00:00 UTC).", _TIME),
         _param("until", "End (exclusive; rounded up to the next 00:00 UTC).", _TIME),
         _param("limit", "Groups per page (default 100), by cost (days: in order).",
                {"type": "integer", "minimum": 1, "maximum": 10000}),
         _param("offset", "Groups to skip (the next_offset of the previous page).", {"type": "integer", "minimum": 0})],
        _ok("Usage", "Usage per group, with totals."),
    ),
    f"{API_PREFIX}/completeness": _get(
        "Completeness per tenant and per user over whole UTC days (default: the last 30 days): of the events "
        "Claude Code numbered in the sessions active in the window, how many were signed.",
        [_param("since", "First day (rounded down to 00:00 UTC).", _TIME),
         _param("until", "End (exclusive; rounded up to the next 00:00 UTC).", _TIME),
         _param("limit", "Users per page (default 100), most missing events first.",
                {"type": "integer", "minimum": 1, "maximum": 10000}),
         _param("offset", "Users to skip (the next_offset of the previous page).", {"type": "integer", "minimum": 0})],
        _ok("Completeness", "The tenant's figure and one per user."),
    ),
    f"{API_PREFIX}/audit/records/{{record_id}}/proof": _get(
        "Everything an offline check of one audit row needs.",
        [_param("record_id", "The row's id.", {"type": "integer"}, where="path"),
         _param("tree_size", "Prove inclusion under the signed tree head of this size (default: the newest).",
                {"type": "integer", "minimum": 1})],
        _ok("Proof", "The proof."),
        not_found=True,
    ),
    f"{API_PREFIX}/audit/consistency": _get(
        "RFC 9162 consistency proof: the tree of `second` leaves extends the tree of `first` leaves.",
        [_param("first", "Smaller tree size.", {"type": "integer", "minimum": 1}, required=True),
         _param("second", "Larger tree size, at most the chain's head.", {"type": "integer", "minimum": 1},
                required=True)],
        _ok("Consistency", "The proof."),
    ),
    f"{API_PREFIX}/audit/tree-heads": _get(
        "Signed tree heads, smallest first, 1000 a page.",
        [_param("after", "Only heads of larger trees than this.", {"type": "integer", "minimum": 1})],
        {"description": "The heads.", "content": {"application/json": {"schema": {
            "type": "object", "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/TreeHead"}},
                "next_after": {"type": ["integer", "null"]}}}}}},
    ),
    f"{API_PREFIX}/audit/verify": _get(
        "Chain status of the caller's tenant, from the reporter's incremental chain check.",
        [],
        {"description": "Status per tenant.", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"tenants": {"type": "array", "items": {
                "$ref": "#/components/schemas/ChainStatus"}}}}}}},
    ),
    f"{API_PREFIX}/signing-keys": _get(
        "Published public keys that sign chain rows, with their validity windows.",
        [],
        {"description": "The keys.", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"keys": {"type": "array", "items": {
                "$ref": "#/components/schemas/SigningKey"}}}}}}},
    ),
}


_SAMPLE_PATH_VALUES = {"{record_id}": "1", "{session_id}": "s", "{token_id}": "t"}


def _with_roles(paths: dict[str, Any]) -> dict[str, Any]:
    """Each operation says which roles may call it and whether it is audited, read from the access table
    (services/reporter/authz.py), so the document cannot drift from what is enforced."""
    annotated = copy.deepcopy(paths)
    for path, item in annotated.items():
        sample = path
        for placeholder, value in _SAMPLE_PATH_VALUES.items():
            sample = sample.replace(placeholder, value)
        for method, operation in item.items():
            rule, _ = find_rule(sample, method.upper())
            assert rule is not None, (method, path)
            operation["x-roles"] = [role for role in ROLES if rule.permission in ROLE_PERMISSIONS[role]]
            operation["description"] = f"Roles: {', '.join(operation['x-roles'])}."
            if rule.discloses is not None:
                operation["x-access-audited"] = rule.discloses.value
                operation["description"] += (" Each answer that discloses content or a proof is first recorded as "
                                              "a signed access event on the tenant's chain (plane access).")
    return annotated


def document(version: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Claude audit reporting API",
            "version": version,
            "description": "Reports over the signed audit log of Claude Code and Cowork telemetry. Every answer "
            "is limited to the tenant of the credential presented: a reporting token (auditctl token issue) or an "
            "OIDC token of the organisation's identity provider, as 'Authorization: Bearer'. Licences only "
            "ingest and are refused here (403). What each role may call is in x-roles.",
        },
        "paths": _with_roles(PATHS),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "reportingToken": {"type": "http", "scheme": "bearer", "bearerFormat": "rpt1.<id>.<secret>",
                                   "description": "A reporting token, bound to one tenant and one role."},
                "oidc": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                         "description": "An ID or access token of the configured issuer (REPORTER_OIDC_ISSUER), "
                         "audience REPORTER_OIDC_AUDIENCE; the role comes from REPORTER_OIDC_ROLE_CLAIM."},
            },
        },
        "security": _SECURITY,
    }
