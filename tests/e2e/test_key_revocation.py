"""A revoked API key stops working at once: new calls on every replica, and alert
streams that were opened with it before."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.client.testing import ServerProcess
from creditwatch.server.api.errors import STREAM_KEY_CHECK_SECONDS
from creditwatch.server.domain.tenants import parse_key
from creditwatch.server.store.tenants import TenantStore
from creditwatch.v1 import scoring_pb2, scoring_pb2_grpc, watchlists_pb2, watchlists_pb2_grpc
from tests.conftest import TenantKey, new_tenant
from tests.e2e import alerting
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

# Generous: a revocation arrives by NOTIFY in well under a second; without it
# a replica's key cache served a revoked key for 30 s.
WAIT_SECONDS = 10.0


async def _list_watch_lists(address: str, key: TenantKey) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            await watchlists_pb2_grpc.WatchListServiceStub(channel).ListWatchLists(
                watchlists_pb2.ListWatchListsRequest(), metadata=key.metadata
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def _until_refused(address: str, key: TenantKey) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while (code := await _list_watch_lists(address, key)) != grpc.StatusCode.UNAUTHENTICATED:
        assert code == grpc.StatusCode.OK, code
        assert time.monotonic() < deadline, f"{address} still accepts the revoked key"
        await asyncio.sleep(0.05)


async def _second_key(sessions: async_sessionmaker[AsyncSession], key: TenantKey) -> TenantKey:
    made = await TenantStore(sessions).create_api_key(key.tenant_id, "second key")
    return TenantKey(key.tenant_id, made.token)


async def _revoke(sessions: async_sessionmaker[AsyncSession], key: TenantKey) -> None:
    revocation = await TenantStore(sessions).revoke_api_key(parse_key(key.api_key).key_id)
    assert not revocation.already_revoked


async def _end_of(call: Any, seconds: float) -> grpc.aio.AioRpcError:
    """Read a stream (heartbeats) until it fails; the error."""

    async def drain() -> None:
        while await call.read() is not grpc.aio.EOF:
            pass

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(drain(), seconds)
    return caught.value


async def test_a_revoked_key_is_refused_on_every_replica_that_cached_it(
    database_url: str,
    server: ServerProcess,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
) -> None:
    kept = await _second_key(sessions, tenant)
    with ServerProcess(database_url) as replica:
        for address in (server.address, replica.address):
            # Each replica now holds both keys in its cache.
            assert await _list_watch_lists(address, tenant) == grpc.StatusCode.OK
            assert await _list_watch_lists(address, kept) == grpc.StatusCode.OK
        async with grpc.aio.insecure_channel(replica.address) as channel:
            stream = alerting.subscribe(channel, tenant, heartbeat_interval_seconds=5)
            await alerting.first_heartbeat(stream)

            await _revoke(sessions, tenant)

            await _until_refused(server.address, tenant)
            await _until_refused(replica.address, tenant)
            ended = await _end_of(stream, 30)
            assert ended.code() == grpc.StatusCode.UNAUTHENTICATED
            assert ended.details() == "API key revoked"
        # Only that key: the tenant's other key goes on working everywhere.
        assert await _list_watch_lists(server.address, kept) == grpc.StatusCode.OK
        assert await _list_watch_lists(replica.address, kept) == grpc.StatusCode.OK


async def test_an_open_alert_stream_ends_unauthenticated_when_its_key_is_revoked(
    channel: grpc.aio.Channel, sessions: async_sessionmaker[AsyncSession]
) -> None:
    revoked = await new_tenant(sessions, "stream revoked")
    kept = await _second_key(sessions, revoked)
    doomed = alerting.subscribe(channel, revoked, heartbeat_interval_seconds=5)
    going_on = alerting.subscribe(channel, kept, heartbeat_interval_seconds=5)
    await alerting.first_heartbeat(doomed)
    await alerting.first_heartbeat(going_on)

    await _revoke(sessions, revoked)

    ended = await _end_of(doomed, 30)
    assert ended.code() == grpc.StatusCode.UNAUTHENTICATED
    assert ended.details() == "API key revoked"
    # The same tenant's stream on another key is not touched: it heartbeats on.
    for _ in range(2):
        message = await asyncio.wait_for(going_on.read(), 15)
        assert message.WhichOneof("payload") == "heartbeat"
    going_on.cancel()


async def test_an_alert_stream_whose_key_is_revoked_while_alerts_flow_ends(
    channel: grpc.aio.Channel, sessions: async_sessionmaker[AsyncSession], feed: TenantKey
) -> None:
    revoked = await new_tenant(sessions, "busy stream revoked")
    numbers = norwegian_numbers(5, start=86_300_000)
    await alerting.watch(channel, revoked, numbers)
    # No heartbeat for 5 minutes: only the key check can end this stream.
    stream = alerting.subscribe(channel, revoked, heartbeat_interval_seconds=300)
    await alerting.first_heartbeat(stream)
    await alerting.record(channel, feed, alerting.remark(numbers[0], "rv-0"))
    # Generous: an open transaction anywhere on the test's PostgreSQL holds
    # alert delivery back (README, "Ordering without gaps").
    assert len(await alerting.alerts(stream, 1, seconds=60)) == 1

    await _revoke(sessions, revoked)

    async def feed_alerts() -> None:  # alerts go on being raised for the tenant
        for i in itertools.count(1):
            number = numbers[i % len(numbers)]
            await alerting.record(channel, feed, alerting.remark(number, f"rv-{i}"))
            await asyncio.sleep(0.3)

    feeding = asyncio.create_task(feed_alerts())
    try:
        ended = await _end_of(stream, 60)
    finally:
        feeding.cancel()
    assert ended.code() == grpc.StatusCode.UNAUTHENTICATED
    assert ended.details() == "API key revoked"


async def test_an_open_stream_scores_call_ends_once_its_key_is_revoked(
    channel: grpc.aio.Channel, sessions: async_sessionmaker[AsyncSession], tenant: TenantKey
) -> None:
    """A bidirectional stream re-checks its key as chunks come in: a client
    holding StreamScores open cannot go on scoring after revocation."""
    key = TenantKey(tenant.tenant_id, (await _second_key(sessions, tenant)).api_key)
    chunk = scoring_pb2.StreamScoresRequest(
        items=[scoring_pb2.ScoreItem(correlation_id="1", financial_statement=healthy())]
    )
    call = scoring_pb2_grpc.ScoringServiceStub(channel).StreamScores(metadata=key.metadata)
    await call.write(chunk)
    assert (await call.read()).results[0].HasField("score")
    await _revoke(sessions, key)
    deadline = time.monotonic() + WAIT_SECONDS + STREAM_KEY_CHECK_SECONDS
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        while True:  # chunks keep coming, as a portfolio upload's do
            assert time.monotonic() < deadline, "the stream went on with a revoked key"
            await call.write(chunk)
            assert (await call.read()).results[0].HasField("score")
            await asyncio.sleep(0.5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (caught.value.details() or "")
