"""PostgreSQL errors sorted into retryable and permanent by asyncpg exception class, never by message text."""

from __future__ import annotations

import asyncpg

_RETRYABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    # What the client raises when a connection dies in the middle of COPY: the protocol is left mid-operation.
    asyncpg.exceptions._base.InternalClientError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.OperatorInterventionError,
    ConnectionError,
    OSError,
    TimeoutError,
)


def is_retryable_db_error(exc: BaseException) -> bool:
    return isinstance(exc, _RETRYABLE)
