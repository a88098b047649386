"""No alert lost: bursts, slow consumers, two replicas, kill -9, many writers.

Each test runs extra server processes on the session's database beside the
shared one, as a deployment runs replicas.
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from creditwatch.client.testing import ServerProcess
from creditwatch.v1 import alerts_pb2, alerts_pb2_grpc
from tests.conftest import TenantKey
from tests.e2e import alerting
from tests.e2e.alerting import record, remark, subscribe, watch
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

# Small buffers and a short lag allowance make slow-consumer handling visible.
TIGHT = {"CREDITWATCH_ALERT_STREAM_BUFFER": "10", "CREDITWATCH_ALERT_MAX_LAG_SECONDS": "1"}


@pytest.fixture(scope="module")
def replica(database_url: str) -> Iterator[ServerProcess]:
    """A second server process on the same database (tight stream buffers)."""
    with ServerProcess(database_url, env=TIGHT) as process:
        yield process


@pytest.fixture
async def replica_channel(replica: ServerProcess) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the replica."""
    async with grpc.aio.insecure_channel(replica.address) as channel:
        yield channel


async def test_alerts_written_through_one_replica_reach_a_stream_on_another(
    channel: grpc.aio.Channel,
    replica_channel: grpc.aio.Channel,
    feed: TenantKey,
    tenant: TenantKey,
) -> None:
    numbers = norwegian_numbers(3, start=87_100_000)
    await watch(channel, tenant, numbers)
    on_replica = subscribe(replica_channel, tenant)
    await alerting.first_heartbeat(on_replica)
    await record(channel, feed, *(remark(n, f"two-{n}") for n in numbers))  # via the other server
    got = await alerting.alerts(on_replica, 3)
    assert sorted(a.company.register_number for a in got) == sorted(numbers)
    on_replica.cancel()


async def test_a_burst_larger_than_the_stream_buffer_arrives_complete_and_in_order(
    channel: grpc.aio.Channel,
    replica_channel: grpc.aio.Channel,
    feed: TenantKey,
    tenant: TenantKey,
) -> None:
    numbers = norwegian_numbers(300, start=87_200_000)
    await watch(channel, tenant, numbers)
    call = subscribe(replica_channel, tenant)
    await alerting.first_heartbeat(call)
    # 300 alerts in one transaction; the replica buffers 10 per stream.
    await record(channel, feed, *(remark(n, f"burst-{n}") for n in numbers))
    got = await alerting.alerts(call, 300)
    assert len({a.name for a in got}) == 300
    assert sorted(a.company.register_number for a in got) == sorted(numbers)
    # One transaction: the stream's order is the order the rows were written.
    listed = await alerts_pb2_grpc.AlertServiceStub(channel).ListAlerts(
        alerts_pb2.ListAlertsRequest(page_size=1000), metadata=tenant.metadata
    )
    assert {a.name for a in got} == {a.name for a in listed.alerts}
    call.cancel()


async def test_a_slow_consumer_is_disconnected_and_resumes_with_nothing_lost(
    channel: grpc.aio.Channel, replica: ServerProcess, feed: TenantKey, tenant: TenantKey
) -> None:
    total = 2_000  # about 600 KB of alerts: more than flow control lets through unread
    numbers = norwegian_numbers(total, start=87_300_000)
    await watch(channel, tenant, numbers)
    # No BDP probing: the client's flow-control window stays small, so a client
    # that does not read really does stall the server's writes.
    async with grpc.aio.insecure_channel(
        replica.address, options=[("grpc.http2.bdp_probe", 0)]
    ) as slow_channel:
        call = subscribe(slow_channel, tenant)
        await alerting.first_heartbeat(call)
        for i in range(0, total, 1_000):
            await record(channel, feed, *(remark(n, f"slow-{n}") for n in numbers[i : i + 1_000]))
        await asyncio.sleep(3)  # not reading, for longer than the allowed lag
        received: list[alerts_pb2.Alert] = []
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            while True:
                message = await asyncio.wait_for(call.read(), 15)
                assert message is not grpc.aio.EOF
                if message.WhichOneof("payload") == "alert":
                    received.append(message.alert)
        assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 0 < len(received) < total
    resumed = subscribe(channel, tenant, after_cursor=received[-1].cursor)
    await alerting.first_heartbeat(resumed)
    rest = await alerting.alerts(resumed, total - len(received))
    names = [a.name for a in received + rest]
    assert len(set(names)) == total
    assert sorted(a.company.register_number for a in received + rest) == sorted(numbers)
    assert await alerting.quiet(resumed, 0.5) == []
    resumed.cancel()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _open_streams(metrics_port: int) -> float:
    """The replica's creditwatch_alert_subscribers gauge."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as response:
        text = response.read().decode()
    (line,) = [x for x in text.splitlines() if x.startswith("creditwatch_alert_subscribers ")]
    return float(line.split()[1])


async def test_a_consumer_that_stops_reading_is_cut_off_within_the_lag_allowance(
    database_url: str, channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    """A write to a client that reads nothing waits on flow control for ever;
    the stream must still end once it has lagged for longer than allowed."""
    total = 2_000  # far more than flow control lets through unread
    numbers = norwegian_numbers(total, start=95_000_000)
    await watch(channel, tenant, numbers)
    metrics_port = _free_port()
    env = {**TIGHT, "CREDITWATCH_METRICS_PORT": str(metrics_port)}
    with ServerProcess(database_url, env=env) as stalling:
        async with grpc.aio.insecure_channel(
            stalling.address, options=[("grpc.http2.bdp_probe", 0)]
        ) as stalled_channel:
            call = subscribe(stalled_channel, tenant)
            await alerting.first_heartbeat(call)
            assert _open_streams(metrics_port) == 1
            for i in range(0, total, 1_000):
                batch = numbers[i : i + 1_000]
                await record(channel, feed, *(remark(n, f"stall-{n}") for n in batch))
            # Behind since the first batch overflowed its buffer: max lag 1 s, plus a margin.
            written = time.monotonic()
            while _open_streams(metrics_port) != 0:
                assert time.monotonic() - written < 5, "the stalled stream is still open"
                await asyncio.sleep(0.1)
            # The client learns it when it reads again (gRPC's Python server cannot
            # reset one call: the status waits behind the messages in flight).
            received: list[alerts_pb2.Alert] = []
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while True:
                    message = await asyncio.wait_for(call.read(), 15)
                    assert message is not grpc.aio.EOF
                    if message.WhichOneof("payload") == "alert":
                        received.append(message.alert)
            assert ended.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 0 < len(received) < total
    resumed = subscribe(channel, tenant, after_cursor=received[-1].cursor)
    await alerting.first_heartbeat(resumed)
    rest = await alerting.alerts(resumed, total - len(received))
    assert len({a.name for a in received + rest}) == total
    assert await alerting.quiet(resumed, 0.5) == []
    resumed.cancel()


async def test_a_consumer_that_stops_reading_during_catch_up_is_cut_off_too(
    database_url: str, channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    """A stream catching up on a backlog never overflows its live buffer
    (nothing new arrives); a client that stops reading must still not hold
    the stream, and its tenant's slot, for ever."""
    total = 2_000  # far more than flow control lets through unread
    numbers = norwegian_numbers(total, start=95_100_000)
    await watch(channel, tenant, numbers)
    before = subscribe(channel, tenant)
    start = (await alerting.first_heartbeat(before)).cursor
    before.cancel()
    for i in range(0, total, 1_000):
        batch = numbers[i : i + 1_000]
        await record(channel, feed, *(remark(n, f"backlog-{n}") for n in batch))
    metrics_port = _free_port()
    env = {**TIGHT, "CREDITWATCH_METRICS_PORT": str(metrics_port)}
    with ServerProcess(database_url, env=env) as stalling:
        async with grpc.aio.insecure_channel(
            stalling.address, options=[("grpc.http2.bdp_probe", 0)]
        ) as stalled_channel:
            call = subscribe(stalled_channel, tenant, after_cursor=start)
            await alerting.first_heartbeat(call)  # then reads nothing more
            opened = time.monotonic()
            while _open_streams(metrics_port) != 0:
                # A write blocked for longer than the lag allowed (1 s), plus a margin.
                assert time.monotonic() - opened < 6, "the stalled catch-up is still open"
                await asyncio.sleep(0.1)
            call.cancel()


async def test_kill_9_mid_stream_then_resume_by_durable_consumer(
    database_url: str, channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    numbers = norwegian_numbers(10, start=87_400_000)
    await watch(channel, tenant, numbers)
    victim = ServerProcess(database_url).start()
    try:
        async with grpc.aio.insecure_channel(victim.address) as victim_channel:
            stub = alerts_pb2_grpc.AlertServiceStub(victim_channel)
            call = subscribe(victim_channel, tenant, consumer="ledger-bridge")
            await alerting.first_heartbeat(call)
            await record(channel, feed, *(remark(n, f"k9-{n}") for n in numbers[:5]))
            first = await alerting.alerts(call, 5)
            await stub.AcknowledgeAlerts(
                alerts_pb2.AcknowledgeAlertsRequest(
                    consumer="ledger-bridge", cursor=first[2].cursor
                ),
                metadata=tenant.metadata,
            )
            victim.kill()  # SIGKILL: no goodbye
            with pytest.raises(grpc.aio.AioRpcError) as broken:
                await alerting.alerts(call, 1)
            assert broken.value.code() == grpc.StatusCode.UNAVAILABLE
        # More alerts while the replica is down.
        await record(channel, feed, *(remark(n, f"k9-{n}") for n in numbers[5:]))
        victim.start()
        async with grpc.aio.insecure_channel(victim.address) as victim_channel:
            again = subscribe(victim_channel, tenant, consumer="ledger-bridge")
            heartbeat = await alerting.first_heartbeat(again)
            assert heartbeat.cursor == first[2].cursor
            rest = await alerting.alerts(again, 7)
            assert [a.name for a in rest[:2]] == [a.name for a in first[3:]]
            assert [a.company.register_number for a in rest] == numbers[3:]
            assert await alerting.quiet(again, 0.5) == []
            again.cancel()
    finally:
        victim.stop()


async def test_concurrent_intake_from_many_clients_is_delivered_once_in_order(
    channel: grpc.aio.Channel,
    replica_channel: grpc.aio.Channel,
    feed: TenantKey,
    tenant: TenantKey,
) -> None:
    numbers = norwegian_numbers(200, start=87_500_000)
    await watch(channel, tenant, numbers)
    call = subscribe(replica_channel, tenant)
    start = await alerting.first_heartbeat(call)
    # 40 clients, 5 companies each, spread over both servers.
    batches = [numbers[i : i + 5] for i in range(0, 200, 5)]
    await asyncio.gather(
        *(
            record(
                channel if i % 2 else replica_channel,
                feed,
                *(remark(n, f"cc-{n}") for n in batch),
            )
            for i, batch in enumerate(batches)
        )
    )
    got = await alerting.alerts(call, 200)
    assert len({a.name for a in got}) == 200
    assert sorted(a.company.register_number for a in got) == sorted(numbers)
    call.cancel()
    # One total order: a replay from the same start on the other server agrees.
    replay = subscribe(channel, tenant, after_cursor=start.cursor)
    await alerting.first_heartbeat(replay)
    again = await alerting.alerts(replay, 200)
    assert [a.name for a in again] == [a.name for a in got]
    replay.cancel()
