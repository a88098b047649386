"""The alert hub's connection and shutdown: it notices a database connection
gone silent (no reset, no answer: a failover, a firewall dropping the flow)
and reconnects, keeping its position, instead of waiting minutes for the
operating system to give up; once stopped, it takes no new subscription."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url

from creditwatch.server.alerts.hub import AlertHub
from creditwatch.server.store import database

pytestmark = pytest.mark.asyncio


class SilentProxy:
    """A TCP proxy to PostgreSQL on loopback whose open connections can be
    made to go silent: bytes are read and nothing more is passed on, and no
    connection is closed; connections opened later pass bytes as usual."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        self._silenced: list[asyncio.Event] = []
        self._writers: list[asyncio.StreamWriter] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def silence(self) -> None:
        for silent in self._silenced:
            silent.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        silent = asyncio.Event()
        self._silenced.append(silent)
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._writers += [writer, up_writer]

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65_536):
                if silent.is_set():
                    continue  # swallowed: the flow is dropped, not reset
                sink.write(data)
                await sink.drain()

        with contextlib.suppress(ConnectionError):
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def stop(self) -> None:
        """Close every connection, both sides (PostgreSQL's backends end too)."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[SilentProxy]:
    kwargs = database.connect_kwargs(database_url)
    if "port" not in kwargs or str(kwargs["host"]).startswith("/"):
        pytest.skip("the test database is reached over a Unix socket, which this proxy is not")
    silent = SilentProxy(str(kwargs["host"]), int(kwargs["port"]))
    await silent.start()
    yield silent
    await silent.stop()


async def test_a_silent_connection_is_dropped_and_the_hub_reconnects(
    database_url: str, proxy: SilentProxy
) -> None:
    url = make_url(database_url).set(host="127.0.0.1", port=proxy.port)
    hub = AlertHub(url.render_as_string(hide_password=False), poll_interval=0.2, query_timeout=1.0)
    hub.start()
    try:
        assert await hub.ready(10)
        before = hub.position
        assert proxy.connections == 1
        proxy.silence()
        # The next poll gets no answer: within its second's deadline (and the
        # reconnect's back-off) the hub is on a new connection, at its position.
        for _ in range(100):
            if proxy.connections > 1:
                break
            await asyncio.sleep(0.1)
        assert proxy.connections == 2
        assert hub.position >= before
    finally:
        await hub.stop()


async def test_a_stopped_hub_refuses_new_subscriptions(database_url: str) -> None:
    import uuid

    from creditwatch.server.domain.alerts import AlertFilter
    from creditwatch.server.domain.errors import Unavailable

    hub = AlertHub(database_url, poll_interval=0.2)
    hub.start()
    assert await hub.ready(10)
    hub.subscribe(uuid.uuid4(), AlertFilter())  # taken while it runs
    await hub.stop()
    # A stream that was still setting up as the replica began to shut down
    # ends UNAVAILABLE at once, rather than wait out the server's grace.
    with pytest.raises(Unavailable):
        hub.subscribe(uuid.uuid4(), AlertFilter())
