"""Per-tenant caps on a real server (small caps set through the environment):
a tenant past a cap is refused with RESOURCE_EXHAUSTED and a QuotaFailure
naming it while another tenant is served, and streams that end, are cancelled
or lose their connection give their slots back."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.client import (
    CreditwatchClient,
    ResourceExhaustedError,
    UnauthenticatedError,
    score_item,
)
from creditwatch.client._errors import error_from_rpc
from creditwatch.client.testing import ServerProcess
from creditwatch.server.store import database
from creditwatch.v1 import scoring_pb2, scoring_pb2_grpc, watchlists_pb2, watchlists_pb2_grpc
from tests.conftest import TenantKey, new_tenant
from tests.e2e.alerting import first_heartbeat, subscribe
from tests.e2e.test_scoring import healthy

pytestmark = pytest.mark.asyncio

ALERT_STREAMS, SCORE_STREAMS, UNARY_CALLS = 3, 1, 3


@pytest.fixture(scope="module")
def quota_database(fresh_database: Any) -> str:
    """A database of its own: the unary test locks a table in it."""
    url: str = fresh_database()
    return url


@pytest.fixture(scope="module")
def capped(quota_database: str) -> Iterator[ServerProcess]:
    """A server with small per-tenant caps."""
    env = {
        "CREDITWATCH_MAX_ALERT_STREAMS_PER_TENANT": str(ALERT_STREAMS),
        "CREDITWATCH_MAX_SCORE_STREAMS_PER_TENANT": str(SCORE_STREAMS),
        "CREDITWATCH_MAX_UNARY_CALLS_PER_TENANT": str(UNARY_CALLS),
        "CREDITWATCH_STREAM_PROCESSES": "0",
        "CREDITWATCH_JOBS_ENABLED": "false",
    }
    with ServerProcess(quota_database, env=env) as process:  # migrates the database
        yield process


@pytest.fixture(scope="module")
async def quota_sessions(
    capped: ServerProcess, quota_database: str
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the capped server's database (after it migrated it)."""
    engine = database.create_engine(database.async_url(quota_database), 2)
    yield database.session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def pair(
    quota_sessions: async_sessionmaker[AsyncSession],
) -> tuple[TenantKey, TenantKey]:
    """(a tenant that will go past its caps, one that must still be served)."""
    return (
        await new_tenant(quota_sessions, "greedy bank"),
        await new_tenant(quota_sessions, "quiet insurer"),
    )


@pytest.fixture
async def capped_channel(capped: ServerProcess) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the capped server."""
    async with grpc.aio.insecure_channel(capped.address) as chan:
        yield chan


def _quota_failure(
    error: grpc.aio.AioRpcError, tenant: TenantKey, setting: str, limit: int
) -> None:
    """Assert `error` is the refusal of `tenant` past the cap `setting` sets."""
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    failures = []
    for detail in status.details:
        failure = error_details_pb2.QuotaFailure()
        if detail.Unpack(failure):
            failures.extend(failure.violations)
    (violation,) = failures
    assert violation.subject == f"tenants/{tenant.tenant_id}"
    assert f"at most {limit} " in violation.description and setting in violation.description
    # The SDK unpacks it.
    sdk = error_from_rpc(error)
    assert isinstance(sdk, ResourceExhaustedError)
    assert sdk.quota_violations == ((violation.subject, violation.description),)


async def _open_streams(channel: grpc.aio.Channel, tenant: TenantKey, count: int) -> list[Any]:
    """`count` alert streams of `tenant`, each past its first heartbeat;
    retried while the slots of streams ended just before come back (the
    server learns of a cancel or a closed connection asynchronously)."""
    deadline = time.monotonic() + 15
    while True:
        calls = [subscribe(channel, tenant) for _ in range(count)]
        try:
            for call in calls:
                await first_heartbeat(call)
            return calls
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            for call in calls:
                call.cancel()
            assert time.monotonic() < deadline, "slots not given back"
            await asyncio.sleep(0.1)


async def test_alert_streams_past_a_tenants_cap_are_refused_while_others_are_served_and_freed(
    capped_channel: grpc.aio.Channel, capped: ServerProcess, pair: tuple[TenantKey, TenantKey]
) -> None:
    greedy, quiet = pair
    held = await _open_streams(capped_channel, greedy, ALERT_STREAMS)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await first_heartbeat(subscribe(capped_channel, greedy))
    _quota_failure(caught.value, greedy, "CREDITWATCH_MAX_ALERT_STREAMS_PER_TENANT", ALERT_STREAMS)
    # The other tenant, at the same time: streams and unary calls served.
    theirs = await _open_streams(capped_channel, quiet, ALERT_STREAMS)
    scoring = scoring_pb2_grpc.ScoringServiceStub(capped_channel)
    await scoring.ScoreFinancials(
        scoring_pb2.ScoreFinancialsRequest(financial_statement=healthy()), metadata=quiet.metadata
    )

    # Cancelled streams give their slots back, again and again.
    for _ in range(3):
        for call in held:
            call.cancel()
        held = await _open_streams(capped_channel, greedy, ALERT_STREAMS)
    # So do streams whose connection closes.
    for call in held:
        call.cancel()
    async with grpc.aio.insecure_channel(capped.address) as elsewhere:
        await _open_streams(elsewhere, greedy, ALERT_STREAMS)
    held = await _open_streams(capped_channel, greedy, ALERT_STREAMS)
    for call in (*held, *theirs):
        call.cancel()


async def test_score_streams_past_a_tenants_cap_are_refused_and_an_ended_one_frees_its_slot(
    capped_channel: grpc.aio.Channel, pair: tuple[TenantKey, TenantKey]
) -> None:
    greedy, quiet = pair
    stub = scoring_pb2_grpc.ScoringServiceStub(capped_channel)
    chunk = scoring_pb2.StreamScoresRequest(
        items=[scoring_pb2.ScoreItem(correlation_id="1", financial_statement=healthy())]
    )

    async def scored(call: Any) -> None:
        await call.write(chunk)
        response = await call.read()
        assert response.results[0].HasField("score"), response

    for _ in range(2):  # the second round proves the first one's slot came back
        mine = stub.StreamScores(metadata=greedy.metadata)
        await scored(mine)
        refused = stub.StreamScores(metadata=greedy.metadata)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await scored(refused)
        _quota_failure(
            caught.value, greedy, "CREDITWATCH_MAX_SCORE_STREAMS_PER_TENANT", SCORE_STREAMS
        )
        theirs = stub.StreamScores(metadata=quiet.metadata)
        await scored(theirs)
        for call in (mine, theirs):
            await call.done_writing()
            assert await call.read() is grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK


def _chunk(items: int) -> scoring_pb2.StreamScoresRequest:
    """A StreamScores message of `items` healthy statements."""
    return scoring_pb2.StreamScoresRequest(
        items=[
            scoring_pb2.ScoreItem(correlation_id=str(i), financial_statement=healthy())
            for i in range(items)
        ]
    )


async def _repeated(
    chunk: scoring_pb2.StreamScoresRequest, times: int
) -> AsyncIterator[scoring_pb2.StreamScoresRequest]:
    """`chunk`, `times` times, written ahead of any read."""
    for _ in range(times):
        yield chunk


async def test_a_refused_score_stream_is_heard_as_refused_by_clients_that_keep_writing(
    capped: ServerProcess, capped_channel: grpc.aio.Channel, pair: tuple[TenantKey, TenantKey]
) -> None:
    """A client that writes on before it reads must still hear the refusal:
    grpc.aio reports a write that fails because the server already ended the
    call as INTERNAL ("Internal error from Core"), in place of the server's
    status (grpc#36066), so the server hears a refused stream out first."""
    greedy, _ = pair
    stub = scoring_pb2_grpc.ScoringServiceStub(capped_channel)
    chunk = _chunk(50)
    mine = stub.StreamScores(metadata=greedy.metadata)
    await mine.write(chunk)
    await mine.read()

    async with CreditwatchClient(capped.address, greedy.api_key) as client:
        for _ in range(5):
            # One write, then a read.
            refused = stub.StreamScores(metadata=greedy.metadata)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await refused.write(chunk)
                await refused.read()
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value
            # Writes queued ahead of the reads.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in stub.StreamScores(_repeated(chunk, 4), metadata=greedy.metadata):
                    pass
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value
            # The SDK's portfolio scoring.
            items = [score_item(str(i), financial_statement=healthy()) for i in range(120)]
            with pytest.raises(ResourceExhaustedError):
                async for _ in client.scoring.score_many(items, chunk_size=30):
                    pass
    await mine.done_writing()
    assert await mine.read() is grpc.aio.EOF


async def test_a_stream_refused_for_its_key_is_heard_as_such_and_the_callers_items_error_raised(
    capped: ServerProcess, capped_channel: grpc.aio.Channel, pair: tuple[TenantKey, TenantKey]
) -> None:
    _, quiet = pair
    stub = scoring_pb2_grpc.ScoringServiceStub(capped_channel)
    chunk = _chunk(50)
    wrong = quiet.api_key[:-4] + "AAAA"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.StreamScores(
            _repeated(chunk, 4), metadata=(("authorization", f"Bearer {wrong}"),)
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, caught.value
    items = [score_item(str(i), financial_statement=healthy()) for i in range(120)]
    async with CreditwatchClient(capped.address, wrong) as client:
        with pytest.raises(UnauthenticatedError):
            async for _ in client.scoring.score_many(items, chunk_size=30):
                pass

    def broken() -> Iterator[scoring_pb2.ScoreItem]:
        yield from items[:70]
        raise ValueError("row 71 of the upload is unreadable")

    # The caller's own error, not a cancellation, and the slot comes back.
    async with CreditwatchClient(capped.address, quiet.api_key) as client:
        scored = 0
        with pytest.raises(ValueError, match="row 71"):
            async for _ in client.scoring.score_many(broken(), chunk_size=30):
                scored += 1
        assert scored <= 70
        deadline = time.monotonic() + 15
        while True:
            try:
                assert len([r async for r in client.scoring.score_many(items[:5])]) == 5
                break
            except ResourceExhaustedError:  # the server learns of a cancel asynchronously
                assert time.monotonic() < deadline, "the slot was not given back"
                await asyncio.sleep(0.1)


async def test_a_portfolio_scoring_left_early_ends_its_stream_and_frees_the_slot(
    capped: ServerProcess, pair: tuple[TenantKey, TenantKey]
) -> None:
    greedy, _ = pair
    statement = healthy()
    # Endless: only the caller's leaving ends the stream.
    items = (score_item(str(i), financial_statement=statement) for i in itertools.count())
    async with CreditwatchClient(capped.address, greedy.api_key) as client:
        for _ in range(3):
            deadline = time.monotonic() + 15
            while True:
                try:
                    async for result in client.scoring.score_many(items, chunk_size=10):
                        assert result.HasField("score")
                        break  # leaves the generator, which closes
                    break
                except ResourceExhaustedError:  # the server learns of a cancel asynchronously
                    assert time.monotonic() < deadline, "the slot was not given back"
                    await asyncio.sleep(0.1)


async def _waiting_on_locks(connection: asyncpg.Connection, count: int) -> None:
    deadline = time.monotonic() + 15
    query = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while await connection.fetchval(query) != count:
        assert time.monotonic() < deadline, f"{count} calls never waited on the lock"
        await asyncio.sleep(0.05)


async def test_unary_calls_past_a_tenants_cap_are_refused_while_others_are_served(
    capped_channel: grpc.aio.Channel, quota_database: str, pair: tuple[TenantKey, TenantKey]
) -> None:
    greedy, quiet = pair
    lists = watchlists_pb2_grpc.WatchListServiceStub(capped_channel)
    scoring = scoring_pb2_grpc.ScoringServiceStub(capped_channel)

    def list_watch_lists() -> Any:
        return lists.ListWatchLists(
            watchlists_pb2.ListWatchListsRequest(), metadata=greedy.metadata, timeout=60
        )

    await list_watch_lists()  # the key is checked once, before the table is locked
    holder = await asyncpg.connect(quota_database)
    try:
        lock = holder.transaction()
        await lock.start()
        await holder.execute("LOCK TABLE watch_lists IN ACCESS EXCLUSIVE MODE")
        # The greedy tenant's calls wait on the lock, each holding its slot.
        waiting = [asyncio.ensure_future(list_watch_lists()) for _ in range(UNARY_CALLS)]
        await _waiting_on_locks(holder, UNARY_CALLS)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await list_watch_lists()
        _quota_failure(caught.value, greedy, "CREDITWATCH_MAX_UNARY_CALLS_PER_TENANT", UNARY_CALLS)
        await scoring.ScoreFinancials(
            scoring_pb2.ScoreFinancialsRequest(financial_statement=healthy()),
            metadata=quiet.metadata,
        )
        await lock.rollback()
        await asyncio.gather(*waiting)
    finally:
        await holder.close()
    # Finished calls gave their slots back (before their answers were sent).
    await asyncio.gather(*(list_watch_lists() for _ in range(UNARY_CALLS)))
