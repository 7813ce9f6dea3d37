"""The PostgreSQL role of each component (created and granted by shared/db/privileges.sql)."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

ROLE_BY_COMPONENT: dict[str, str] = {
    "receiver": "audit_receiver",
    "redactor": "audit_redactor",
    "signer": "audit_signer",
    "reporter": "audit_reporter",
    "usage": "audit_usage",
    "auditctl": "audit_admin",
}
COMPONENT_ROLES: tuple[str, ...] = tuple(ROLE_BY_COMPONENT.values())


def dsn_for_role(dsn: str, role: str, password: str | None = None) -> str:
    """The same server and database as ``dsn``, logged in as ``role`` (with ``password``, if given).

    For set-ups where roles log in without a password (trust or certificate authentication, as the embedded
    development database does); elsewhere each component gets its own DATABASE_URL with its password.
    """
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    user = quote(role, safe="")
    credentials = f"{user}:{quote(password, safe='')}" if password is not None else user
    return urlunsplit(parts._replace(netloc=f"{credentials}@{host}"))
