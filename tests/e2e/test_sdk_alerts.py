"""The SDK's alert stream: resumes by itself across a server crash, nothing lost or repeated."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.client import (
    AlertStream,
    CreditwatchClient,
    InvalidArgumentError,
    alert_filter,
)
from creditwatch.client.testing import ServerProcess
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE
from creditwatch.v1 import alerts_pb2, common_pb2
from tests.conftest import TenantKey, new_tenant
from tests.e2e.alerting import bankruptcy, record, remark, watch
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def feed(sessions: async_sessionmaker[AsyncSession]) -> TenantKey:
    """A data feed's key: granted company-data intake."""
    return await new_tenant(sessions, "sdk feed", scopes=(SCOPE_COMPANIES_WRITE,))


async def _take(stream: AlertStream, count: int) -> list[alerts_pb2.Alert]:
    async def read() -> list[alerts_pb2.Alert]:
        return [await anext(stream) for _ in range(count)]

    return await asyncio.wait_for(read(), 60)


async def test_alert_stream_survives_a_server_crash_with_nothing_lost(
    database_url: str, channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    numbers = norwegian_numbers(10, start=85_100_000)
    await watch(channel, tenant, numbers)
    replica = ServerProcess(database_url).start()
    try:
        async with CreditwatchClient(replica.address, tenant.api_key) as client:
            stream = client.alerts.subscribe(
                consumer="sdk-bridge", auto_acknowledge=True, heartbeat_interval=5
            )
            first_read = asyncio.create_task(_take(stream, 3))
            await asyncio.sleep(1)  # the stream is open and positioned at "now"
            await record(channel, feed, *(remark(n, f"sdk-{n}") for n in numbers[:3]))
            first = await first_read

            replica.kill()  # a crash, mid-stream
            await record(channel, feed, *(remark(n, f"sdk-{n}") for n in numbers[3:6]))
            replica.start()  # same port; the stream reconnects by itself
            second = await _take(stream, 3)
            await record(channel, feed, *(remark(n, f"sdk-{n}") for n in numbers[6:9]))
            third = await _take(stream, 3)
            assert stream.reconnects >= 1
            await stream.close()  # acknowledges the last handled alert

            got = first + second + third
            assert [a.company.register_number for a in got] == numbers[:9]
            assert len({a.name for a in got}) == 9

            # The consumer continues after the acknowledged position: only the new alert.
            again = client.alerts.subscribe(consumer="sdk-bridge")
            reading = asyncio.create_task(_take(again, 1))
            await asyncio.sleep(1)
            await record(channel, feed, remark(numbers[9], f"sdk-{numbers[9]}"))
            (latest,) = await reading
            assert latest.company.register_number == numbers[9]
            await again.close()
    finally:
        replica.stop()


async def test_sdk_lists_filters_and_raises_typed_errors(
    channel: grpc.aio.Channel, server: ServerProcess, feed: TenantKey, tenant: TenantKey
) -> None:
    numbers = norwegian_numbers(2, start=85_200_000)
    await watch(channel, tenant, numbers, exposure=5_000)
    await record(channel, feed, remark(numbers[0], "sdk-l1"), bankruptcy(numbers[1], "sdk-l2"))
    async with CreditwatchClient(server.address, tenant.api_key) as client:
        severe = [
            a async for a in client.alerts.list(filter=alert_filter(minimum_severity="CRITICAL"))
        ]
        assert [a.type for a in severe] == [common_pb2.ALERT_TYPE_BANKRUPTCY_OPENED]
        everything = [a async for a in client.alerts.list(order_by="priority desc", page_size=1)]
        assert everything[0].name == severe[0].name  # CRITICAL x exposure ranks first
        assert len(everything) == 2  # no class change: the company had no score before
        assert (await client.alerts.get(severe[0].name)).name == severe[0].name

        stream = client.alerts.subscribe(after_cursor="garbage")
        with pytest.raises(InvalidArgumentError) as bad:
            await anext(stream)
        assert "after_cursor" in bad.value.field_violations
        with pytest.raises(ValueError):
            client.alerts.subscribe(auto_acknowledge=True)  # needs a consumer
        oldest = client.alerts.subscribe(start="oldest")
        first = await _take(oldest, 2)
        assert {a.name for a in first} == {a.name for a in everything}
        await oldest.close()
