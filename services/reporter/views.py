"""What a role sees inside an answer it may have (services/reporter/authz.py decides whether it may have it):
the row scope of its queries, and content shown as lengths to analysts. The API and the portal both use it."""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request

from services.reporter import queries
from services.reporter.authz import Permission, Principal, note_disclosure
from services.reporter.state import principal_of


def scoped_feed(principal: Principal, filters: queries.FeedFilters) -> queries.FeedFilters:
    return dataclasses.replace(filters, own_email=principal.own_email, hide_access=not principal.sees_access_rows)


def feed_items(request: Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    principal = principal_of(request)
    note_disclosure(request.scope, record_ids=[item["id"] for item in items], rows=len(items))
    for item in items:
        if not principal.sees_content:
            # Lengths stay (content_lengths); the text, and attributes that may quote it, do not.
            item["content"] = None
            item["attributes"] = None
        if not principal.may(Permission.READ_PROOFS):
            item["proof"] = None  # a link the role could not follow
    return items


def session_summary(request: Request, summary: dict[str, Any]) -> dict[str, Any]:
    principal = principal_of(request)
    note_disclosure(request.scope, session_id=summary["session_id"],
                    record_ids=[p["id"] for p in summary["prompts"]] + [e["id"] for e in summary["errors"]],
                    rows=summary["events"])
    if not principal.sees_content:
        for prompt in summary["prompts"]:
            prompt["text"] = None
        for error in summary["errors"]:
            error["message"] = None
    if not principal.may(Permission.READ_PROOFS):
        for row in (*summary["prompts"], *summary["approvals"]["decisions"]):
            row["proof"] = None
    return summary
