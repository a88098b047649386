"""The embedded PostgreSQL is stopped by the last server process using it,
even after one of them was killed with SIGKILL (which never took itself off
the embedded server's list of users)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

from tests.conftest import ROOT

# A process that starts (or reuses) the embedded server in argv[1], says so,
# then waits to be killed ("wait") or exits at once, as a stopped server does.
_USER = """
import sys, time
from pathlib import Path
from creditwatch.server.store.database import start_embedded
start_embedded(Path(sys.argv[1]))
print("up", flush=True)
if sys.argv[2] == "wait":
    time.sleep(3600)
"""


def _postmaster(pgdata: Path) -> int | None:
    """The running embedded server's pid, if its pid file is there."""
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, IndexError, ValueError):
        return None


def _start(command: list[str]) -> subprocess.Popen[str]:
    """A process using the embedded server, once it says it is up. The
    packaged pg_ctl now and then crashes on start (see
    tests/e2e/test_postgres_restart.py); a user then tries again."""
    for attempt in range(5):
        process = subprocess.Popen(
            [*command, "wait"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert process.stdout is not None and process.stderr is not None
        if process.stdout.readline().strip() == "up":
            return process
        process.kill()
        _, errors = process.communicate(timeout=60)
        if attempt == 4:
            raise AssertionError(f"the embedded server did not start:\n{errors}")
    raise AssertionError("unreachable")


def _run(command: list[str]) -> str:
    """Run a process using the embedded server to its end (again, as a user
    would, when the packaged pg_ctl crashes on start); its output."""
    for attempt in range(5):
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
        if done.returncode == 0 or attempt == 4:
            break
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_embedded_server_stops_after_a_user_was_killed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pgdata = data / "pgdata"
    command = [sys.executable, "-c", _USER, str(data)]
    killed = _start(command)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(60)
        assert _postmaster(pgdata) is not None  # the server outlives it
        # Another server process uses the embedded server, then stops.
        _run([*command, "exit"])
        deadline = time.monotonic() + 60
        while _postmaster(pgdata) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _postmaster(pgdata) is None  # it stopped the embedded server
    finally:
        if killed.poll() is None:
            killed.kill()
            killed.wait(60)
        if (pid := _postmaster(pgdata)) is not None:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)  # fast shutdown of what the test left


def test_a_user_ended_by_sigterm_or_sighup_stops_the_embedded_server(tmp_path: Path) -> None:
    # `creditwatch demo` or `registers sync` stopped by `kill`, a server whose
    # terminal closed: by default both signals end a process without its exit
    # handlers, and PostgreSQL kept running with nobody left to stop it.
    for kind in (signal.SIGTERM, signal.SIGHUP):
        data = tmp_path / kind.name
        pgdata = data / "pgdata"
        user = _start([sys.executable, "-c", _USER, str(data)])
        try:
            user.send_signal(kind)
            assert user.wait(60) == 128 + kind
            deadline = time.monotonic() + 60
            while _postmaster(pgdata) is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _postmaster(pgdata) is None, kind.name
        finally:
            if user.poll() is None:
                user.kill()
                user.wait(60)
            if (pid := _postmaster(pgdata)) is not None:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGINT)


# Starts the embedded server in argv[1], prints the socket mode it was told
# to create its socket with, then its URL.
_URL = """
import asyncio, sys
from pathlib import Path
import asyncpg
from creditwatch.server.store.database import async_url, connect_kwargs, start_embedded
url = start_embedded(Path(sys.argv[1]))

async def mode():
    connection = await asyncpg.connect(**connect_kwargs(async_url(url)))
    print(await connection.fetchval("SHOW unix_socket_permissions"), flush=True)
    await connection.close()

asyncio.run(mode())
print(url, flush=True)
"""


def test_only_the_owner_may_connect_to_the_embedded_server_s_socket(tmp_path: Path) -> None:
    """The embedded server trusts every local connection, so its socket must
    not be open to other local users, also when the data folder's path is too
    long for a socket there and it goes to a shared runtime folder."""
    data = tmp_path / ("long-" * 14) / "data"  # pgdata/.s.PGSQL.5432 exceeds 107 bytes
    told, url = _run([sys.executable, "-c", _URL, str(data)]).split()
    # Created so: no moment in which another user could connect and stay.
    assert told == "0700"
    folder = Path(url.rsplit("?host=", 1)[1])
    assert not folder.is_relative_to(data)  # the case that matters: a shared folder
    # That process stopped the server at exit; look while one is running.
    waiting = _start([sys.executable, "-c", _USER, str(data)])
    try:
        sockets = [s for s in folder.glob(".s.PGSQL.*") if s.suffix != ".lock"]
        assert len(sockets) == 1
        assert sockets[0].stat().st_mode & 0o077 == 0, oct(sockets[0].stat().st_mode)
    finally:
        waiting.send_signal(signal.SIGTERM)
        waiting.wait(60)
