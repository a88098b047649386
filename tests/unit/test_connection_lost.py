"""Which errors mean "PostgreSQL is unreachable" (UNAVAILABLE), not a bug (INTERNAL)."""

from __future__ import annotations

import asyncpg
from sqlalchemy import exc

from creditwatch.server.store.database import connection_lost


def _raised_from(error: BaseException, cause: BaseException) -> BaseException:
    try:
        raise error from cause
    except BaseException as raised:
        return raised


def test_lost_connections_are_told_apart_from_faults() -> None:
    assert connection_lost(asyncpg.exceptions.ConnectionDoesNotExistError("gone"))
    assert connection_lost(asyncpg.exceptions.AdminShutdownError("terminating connection"))
    assert connection_lost(ConnectionResetError())
    assert connection_lost(_raised_from(RuntimeError("wrapped"), ConnectionRefusedError()))
    wrapped = exc.DBAPIError("SELECT 1", None, asyncpg.exceptions.InterfaceError("closed"))
    assert connection_lost(wrapped)
    # No pooled connection free within the pool's timeout: the replica is
    # saturated, which a retry may find over (UNAVAILABLE, not INTERNAL).
    assert connection_lost(exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached"))

    assert not connection_lost(ValueError("a bug"))
    assert not connection_lost(asyncpg.exceptions.UniqueViolationError("duplicate key"))
    assert not connection_lost(_raised_from(RuntimeError("wrapped"), KeyError("x")))
    unrelated = exc.DBAPIError("SELECT 1", None, asyncpg.exceptions.DivisionByZeroError("/0"))
    assert not connection_lost(unrelated)
