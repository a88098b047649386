"""The SDK's retries when the network fails after the server did the work.

A loopback TCP proxy sits between the SDK and a real server; it can swallow
the responses on the connections open now and then cut them, as a network
failure just after the server committed would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest

from creditwatch.client import (
    CreditwatchClient,
    NotFoundError,
    RetryPolicy,
    UnavailableError,
    company,
    entry,
)
from creditwatch.client.testing import ServerProcess
from creditwatch.v1 import watchlists_pb2, watchlists_pb2_grpc
from tests.conftest import TenantKey
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

RETRY = RetryPolicy(max_attempts=50, initial_backoff=0.1, max_backoff=0.5)


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    losing: bool = False


class LossyProxy:
    """A TCP proxy to `upstream` on loopback that can lose responses."""

    def __init__(self, upstream: str) -> None:
        self._host, port = upstream.rsplit(":", 1)
        self._port = int(port)
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen (again on the same port once it had one)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.cut()

    def lose_responses(self) -> None:
        """From now on, drop what the server sends on the connections open now."""
        for connection in self._connections:
            connection.losing = True

    def cut(self) -> None:
        """Reset every open connection."""
        for connection in list(self._connections):
            connection.client.transport.abort()
            connection.upstream.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        connection = _Connection(writer, up_writer)
        self._connections.add(connection)

        async def pump(
            source: asyncio.StreamReader, target: asyncio.StreamWriter, response: bool
        ) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65_536):
                    if response and connection.losing:
                        continue
                    target.write(data)
                    await target.drain()
            target.transport.abort()

        try:
            await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))
        finally:
            self._connections.discard(connection)


@pytest.fixture
async def proxy(server: ServerProcess) -> AsyncIterator[LossyProxy]:
    """A lossy proxy in front of the session's server."""
    lossy = LossyProxy(server.address)
    await lossy.start()
    yield lossy
    await lossy.stop()


async def _entry_count(channel: grpc.aio.Channel, tenant: TenantKey, name: str) -> int | None:
    """The watch list's entries, read past the proxy; None once it is gone."""
    stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
    try:
        response = await stub.GetWatchList(
            watchlists_pb2.GetWatchListRequest(name=name), metadata=tenant.metadata
        )
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    return int(response.watch_list.entry_count)


async def _until(condition: Callable[[], Awaitable[bool]], seconds: float = 15.0) -> None:
    """Poll `condition` (another process's state) until it holds."""
    for _ in range(int(seconds / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"still not true after {seconds} s")


async def _is_gone(channel: grpc.aio.Channel, tenant: TenantKey, name: str) -> bool:
    return await _entry_count(channel, tenant, name) is None


async def test_a_delete_whose_response_was_lost_succeeds_on_its_retry(
    channel: grpc.aio.Channel, proxy: LossyProxy, tenant: TenantKey
) -> None:
    numbers = norwegian_numbers(2, start=94_400_000)
    async with CreditwatchClient(proxy.address, tenant.api_key, retry=RETRY) as client:
        doomed = await client.watch_lists.create("Lost response")
        await client.watch_lists.add_entries(doomed.name, [entry("NO", n) for n in numbers])

        proxy.lose_responses()
        deleting = asyncio.create_task(client.watch_lists.delete(doomed.name))
        # The server deleted it; its answer went nowhere. Then the connection breaks.
        await _until(lambda: _is_gone(channel, tenant, doomed.name))
        proxy.cut()
        assert await asyncio.wait_for(deleting, 30) == 0  # done; the count was lost

        # A delete of what is not there is still NOT_FOUND.
        with pytest.raises(NotFoundError):
            await client.watch_lists.delete(doomed.name)


async def test_a_removal_whose_response_was_lost_is_not_repeated(
    channel: grpc.aio.Channel, proxy: LossyProxy, tenant: TenantKey
) -> None:
    numbers = norwegian_numbers(3, start=94_500_000)
    async with CreditwatchClient(proxy.address, tenant.api_key, retry=RETRY) as client:
        watch_list = await client.watch_lists.create("Lost removal")
        await client.watch_lists.add_entries(watch_list.name, [entry("NO", n) for n in numbers])

        proxy.lose_responses()
        removing = asyncio.create_task(
            client.watch_lists.remove_entries(watch_list.name, [company("NO", numbers[0])])
        )

        async def removed() -> bool:
            return await _entry_count(channel, tenant, watch_list.name) == 2

        await _until(removed)
        proxy.cut()
        # A repeat would report the removed entry as not found: the SDK says
        # it cannot know instead.
        with pytest.raises(UnavailableError) as caught:
            await asyncio.wait_for(removing, 30)
        assert "may have reached the server" in " ".join(caught.value.__notes__)

        # A call that never reached the server is retried as before. (Once the
        # channel has seen the cut: a call written to the dead connection
        # before it noticed may have reached the server, and is not retried.)
        await proxy.stop()

        async def noticed() -> bool:
            return client.channel.get_state() != grpc.ChannelConnectivity.READY

        await _until(noticed)
        removing = asyncio.create_task(
            client.watch_lists.remove_entries(
                watch_list.name, [company("NO", numbers[1]), company("NO", numbers[0])]
            )
        )
        await asyncio.sleep(1.0)
        assert not removing.done(), "the call should be retrying while nothing listens"
        await proxy.start()
        result = await asyncio.wait_for(removing, 30)
        assert (result.removed_count, result.not_found_count) == (1, 1)
