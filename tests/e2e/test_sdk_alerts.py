"""The SDK's alert stream: resumes by itself across a server crash, nothing lost or repeated."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from creditwatch.client import (
    AlertStream,
    CreditwatchClient,
    InvalidArgumentError,
    alert_filter,
)
from creditwatch.client.testing import ServerProcess
from creditwatch.v1 import alerts_pb2, common_pb2
from tests.conftest import TenantKey
from tests.e2e.alerting import bankruptcy, record, remark, watch
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


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
            await stream.acknowledge()  # the alert the loop holds was handled too
            await stream.close()

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


class HandlerFailed(Exception):
    """The caller's handling of an alert failed (e.g. its case system is down)."""


async def test_an_alert_whose_handler_raised_is_delivered_again(
    channel: grpc.aio.Channel, server: ServerProcess, feed: TenantKey, tenant: TenantKey
) -> None:
    numbers = norwegian_numbers(2, start=94_100_000)
    await watch(channel, tenant, numbers)
    seen: list[alerts_pb2.Alert] = []
    async with CreditwatchClient(server.address, tenant.api_key) as client:

        async def consume() -> None:  # the usage the AlertStream docstring shows
            async with client.alerts.subscribe(
                consumer="case-system", auto_acknowledge=True, heartbeat_interval=5
            ) as stream:
                async for alert in stream:
                    seen.append(alert)
                    if len(seen) == 2:
                        raise HandlerFailed(alert.name)

        consuming = asyncio.create_task(consume())
        await asyncio.sleep(1)  # the consumer is created at "now"
        await record(channel, feed, *(remark(n, f"sdk-h-{n}") for n in numbers))
        with pytest.raises(HandlerFailed):
            await asyncio.wait_for(consuming, 60)

        # The consumer resumes after the first alert (handled), with the second.
        again = client.alerts.subscribe(consumer="case-system", heartbeat_interval=5)
        (redelivered,) = await _take(again, 1)
        await again.close()
    assert [a.company.register_number for a in seen] == numbers
    assert redelivered.name == seen[1].name


async def test_a_close_from_another_task_ends_the_reading_loop(
    channel: grpc.aio.Channel, server: ServerProcess, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=94_110_000)[0]
    await watch(channel, tenant, [number])
    seen: list[alerts_pb2.Alert] = []
    async with CreditwatchClient(server.address, tenant.api_key) as client:
        stream = client.alerts.subscribe(
            consumer="closed-elsewhere", auto_acknowledge=True, heartbeat_interval=5
        )

        async def consume() -> None:
            async for alert in stream:
                seen.append(alert)

        consuming = asyncio.create_task(consume())
        await asyncio.sleep(1)
        await record(channel, feed, remark(number, "sdk-close-0"))
        for _ in range(600):
            if seen:
                break
            await asyncio.sleep(0.1)
        # A shutdown hook closes the stream while the loop waits for the next
        # alert: the loop ends as a loop does, the task is not cancelled.
        await stream.close()
        await asyncio.wait_for(consuming, 10)
        assert not consuming.cancelled()
        assert [a.company.register_number for a in seen] == [number]

        # The alert the loop had asked past was stored as handled on close.
        again = client.alerts.subscribe(consumer="closed-elsewhere", heartbeat_interval=5)
        heartbeat_only = asyncio.create_task(_take(again, 1))
        await asyncio.sleep(2.5)
        assert not heartbeat_only.done()
        heartbeat_only.cancel()
        await again.close()


async def test_an_acknowledgement_during_a_restart_does_not_end_the_stream(
    database_url: str, channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    numbers = norwegian_numbers(2, start=85_350_000)
    await watch(channel, tenant, numbers)
    replica = ServerProcess(database_url).start()
    try:
        async with CreditwatchClient(replica.address, tenant.api_key) as client:
            stream = client.alerts.subscribe(
                consumer="restart-bridge", auto_acknowledge=True, heartbeat_interval=5
            )
            reading = asyncio.create_task(_take(stream, 1))
            await asyncio.sleep(1)
            await record(channel, feed, remark(numbers[0], "sdk-ack-0"))
            (first,) = await reading
            await asyncio.sleep(1.2)  # handling takes longer than acknowledge_interval
            replica.kill()  # so the next __anext__ acknowledges into the outage
            await record(channel, feed, remark(numbers[1], "sdk-ack-1"))

            async def restart_later() -> None:
                await asyncio.sleep(4)  # longer than the unary retries (~1.5 s)
                await asyncio.to_thread(replica.start)

            restarting = asyncio.create_task(restart_later())
            (second,) = await _take(stream, 1)
            await restarting
            await stream.close()
            assert second.company.register_number == numbers[1]

            # The acknowledgement that met the outage was stored after it:
            # the consumer resumes after the first alert.
            again = client.alerts.subscribe(consumer="restart-bridge", heartbeat_interval=5)
            (resumed,) = await _take(again, 1)
            await again.close()
            assert resumed.name == second.name != first.name
    finally:
        replica.stop()


async def test_a_refused_cursor_given_to_acknowledge_is_raised_at_once_and_dropped(
    channel: grpc.aio.Channel, server: ServerProcess, feed: TenantKey, tenant: TenantKey
) -> None:
    """A cursor the caller names and the server refuses is the caller's
    mistake: raised by that call, not kept and sent again with every alert
    until the stream gives up on it."""
    numbers = norwegian_numbers(2, start=85_380_000)
    await watch(channel, tenant, numbers)
    async with CreditwatchClient(server.address, tenant.api_key) as client:
        stream = client.alerts.subscribe(consumer="typo-bridge", heartbeat_interval=5)
        reading = asyncio.create_task(_take(stream, 1))
        await asyncio.sleep(1)
        await record(channel, feed, remark(numbers[0], "sdk-typo-0"))
        (first,) = await reading
        with pytest.raises(InvalidArgumentError) as refused:
            await stream.acknowledge("not-a-cursor")
        assert "cursor" in refused.value.field_violations
        assert await stream.acknowledge() is True  # the alert it holds
        await record(channel, feed, remark(numbers[1], "sdk-typo-1"))
        (second,) = await _take(stream, 1)  # the refused cursor is not sent again
        await stream.close()

        again = client.alerts.subscribe(consumer="typo-bridge", heartbeat_interval=5)
        (resumed,) = await _take(again, 1)
        await again.close()
        assert resumed.name == second.name != first.name
