"""The Python SDK against a real server and real PostgreSQL, used as an integrator would."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest

from creditwatch.client import (
    CreditwatchClient,
    InvalidArgumentError,
    NotFoundError,
    RetryPolicy,
    UnauthenticatedError,
    UnavailableError,
    company,
    entry,
    entry_name,
)
from creditwatch.client.testing import ServerProcess
from creditwatch.v1 import watchlists_pb2
from tests.conftest import TenantKey
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def client(server: ServerProcess, tenant: TenantKey) -> AsyncIterator[CreditwatchClient]:
    """An SDK client of the session's server, as the test's tenant."""
    async with CreditwatchClient(server.address, tenant.api_key) as sdk:
        yield sdk


def _bad_check_digit(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


async def test_create_get_list_update_delete(client: CreditwatchClient) -> None:
    lists = client.watch_lists
    first = await lists.create(
        "Nordic SMEs", description="SME book", pd_threshold=0.05, labels={"desk": "oslo"}
    )
    second = await lists.create("Large corporates")
    assert first.name.startswith("watchLists/")
    assert (first.display_name, first.description, first.labels["desk"]) == (
        "Nordic SMEs",
        "SME book",
        "oslo",
    )
    assert (await lists.get(first.name)).pd_threshold == pytest.approx(0.05)

    # page_size=1 makes the iterator follow a page token.
    assert [w.name async for w in lists.list(page_size=1)] == [first.name, second.name]

    renamed = await lists.update(first.name, display_name="Renamed", description="")
    assert (renamed.display_name, renamed.description) == ("Renamed", "")
    assert renamed.pd_threshold == pytest.approx(0.05), "fields not given must not change"
    assert dict(renamed.labels) == {"desk": "oslo"}
    relabelled = await lists.update(first.name, labels={}, pd_threshold=0.2)
    assert dict(relabelled.labels) == {}
    assert relabelled.pd_threshold == pytest.approx(0.2)

    await lists.add_entries(
        first.name, [entry("NO", n) for n in norwegian_numbers(3, start=84_000_000)]
    )
    assert await lists.delete(first.name) == 3
    with pytest.raises(NotFoundError):
        await lists.get(first.name)
    assert [w.name async for w in lists.list()] == [second.name]


async def test_create_with_the_same_request_id_returns_the_first_watch_list(
    client: CreditwatchClient,
) -> None:
    once = await client.watch_lists.create("Once", request_id="sdk-create-once")
    again = await client.watch_lists.create("Once", request_id="sdk-create-once")
    assert once.name == again.name
    assert len([w async for w in client.watch_lists.list()]) == 1


class _AddEntriesSizes(grpc.aio.UnaryUnaryClientInterceptor):
    """Records the number of entries of every AddEntries RPC the client sends."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        method = client_call_details.method
        if (method.decode() if isinstance(method, bytes) else method).endswith("/AddEntries"):
            self.sizes.append(len(request.entries))
        return await continuation(client_call_details, request)


async def test_25000_entries_in_one_call_are_sent_in_chunks_and_listed_back(
    server: ServerProcess, tenant: TenantKey
) -> None:
    recorder = _AddEntriesSizes()
    async with CreditwatchClient(server.address, tenant.api_key, interceptors=[recorder]) as client:
        watch_list = await client.watch_lists.create("Whole book")
        numbers = norwegian_numbers(25_000, start=84_100_000)

        def book() -> Iterator[watchlists_pb2.WatchListEntry]:
            for i, number in enumerate(numbers):
                yield entry("NO", number, exposure=("NOK", 1000 + i), labels={"book": "retail"})

        result = await client.watch_lists.add_entries(watch_list.name, book())
        assert recorder.sizes == [10_000, 10_000, 5_000]
        assert (result.added_count, result.updated_count, result.entry_count) == (
            25_000,
            0,
            25_000,
        )

        listed = [e async for e in client.watch_lists.list_entries(watch_list.name)]
        assert [e.company.register_number for e in listed] == numbers
        assert listed[24_999].exposure.units == 1000 + 24_999
        assert (await client.watch_lists.get(watch_list.name)).entry_count == 25_000

        again = await client.watch_lists.add_entries(
            watch_list.name, [entry("NO", n) for n in numbers[9_990:10_010]]
        )
        assert (again.added_count, again.updated_count, again.entry_count) == (0, 20, 25_000)

        nothing = await client.watch_lists.add_entries(watch_list.name, [])
        assert (nothing.added_count, nothing.updated_count, nothing.entry_count) == (0, 0, 25_000)
        assert recorder.sizes == [10_000, 10_000, 5_000, 20]


async def test_bad_check_digit_is_named_by_the_callers_index_across_chunks(
    client: CreditwatchClient,
) -> None:
    watch_list = await client.watch_lists.create("Chunked import")
    numbers = norwegian_numbers(250, start=84_200_000)
    entries = [entry("NO", n) for n in numbers]
    entries[205] = entry("NO", _bad_check_digit(numbers[205]))
    entries[207] = entry("NO", numbers[203])  # a duplicate inside the third chunk

    with pytest.raises(InvalidArgumentError) as caught:
        await client.watch_lists.add_entries(watch_list.name, entries, chunk_size=100)

    violations = caught.value.field_violations
    assert set(violations) == {
        "entries[205].company.register_number",
        "entries[207].company",
    }
    assert "entries[203]" in violations["entries[207].company"]
    assert any("entries[0:200] were applied" in note for note in caught.value.__notes__)
    # Chunks are atomic: the two good chunks were written, the bad one not at all.
    assert (await client.watch_lists.get(watch_list.name)).entry_count == 200


async def test_bad_entry_in_the_first_chunk_writes_nothing(client: CreditwatchClient) -> None:
    watch_list = await client.watch_lists.create("First chunk bad")
    numbers = norwegian_numbers(30, start=84_300_000)
    entries = [entry("NO", n) for n in numbers]
    entries[7] = entry("NO", _bad_check_digit(numbers[7]))
    with pytest.raises(InvalidArgumentError) as caught:
        await client.watch_lists.add_entries(watch_list.name, entries, chunk_size=10)
    assert list(caught.value.field_violations) == ["entries[7].company.register_number"]
    assert not getattr(caught.value, "__notes__", [])
    assert (await client.watch_lists.get(watch_list.name)).entry_count == 0


async def test_entries_can_be_read_filtered_and_removed(client: CreditwatchClient) -> None:
    lists = client.watch_lists
    watch_list = await lists.create("Mixed")
    numbers = norwegian_numbers(6, start=84_400_000)
    await lists.add_entries(
        watch_list.name,
        [
            entry("NO", n, labels={"segment": "sme" if i % 2 else "corporate"})
            for i, n in enumerate(numbers)
        ],
    )
    one = await lists.get_entry(entry_name(watch_list.name, "NO", numbers[1]))
    assert one.labels["segment"] == "sme"
    smes = [
        e.company.register_number
        async for e in lists.list_entries(watch_list.name, label="segment=sme", page_size=2)
    ]
    assert smes == numbers[1::2]
    assert [e async for e in lists.list_entries(watch_list.name, risk_classes=["D"])] == []

    removed = await lists.remove_entries(
        watch_list.name,
        [company("NO", n) for n in numbers[:4]] + [company("NO", numbers[0])],
        chunk_size=3,
    )
    # Chunks [0,1,2] and [3,0]: numbers[0] is gone by the second chunk.
    assert (removed.removed_count, removed.not_found_count) == (4, 1)
    left = [e.company.register_number async for e in lists.list_entries(watch_list.name)]
    assert left == numbers[4:]

    with pytest.raises(InvalidArgumentError) as caught:
        await lists.remove_entries(
            watch_list.name,
            [company("NO", numbers[4]), company("NO", _bad_check_digit(numbers[5]))],
            chunk_size=1,
        )
    assert list(caught.value.field_violations) == ["companies[1].register_number"]


async def test_another_tenants_watch_list_is_not_found(
    server: ServerProcess, client: CreditwatchClient, other_tenant: TenantKey
) -> None:
    mine = await client.watch_lists.create("Private")
    async with CreditwatchClient(server.address, other_tenant.api_key) as theirs:
        with pytest.raises(NotFoundError) as caught:
            await theirs.watch_lists.get(mine.name)
        assert caught.value.resource_name == mine.name
        with pytest.raises(NotFoundError):
            await theirs.watch_lists.add_entries(
                mine.name, [entry("NO", norwegian_numbers(1, start=84_500_000)[0])]
            )
        assert [w async for w in theirs.watch_lists.list()] == []


async def test_a_wrong_api_key_is_unauthenticated(server: ServerProcess) -> None:
    async with CreditwatchClient(server.address, "cw_not_a_real_key") as stranger:
        with pytest.raises(UnauthenticatedError):
            await stranger.watch_lists.create("Nope")
        with pytest.raises(UnauthenticatedError):
            _ = [w async for w in stranger.watch_lists.list()]


async def test_a_call_retries_until_the_server_is_back_on_the_same_port(
    database_url: str, tenant: TenantKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="creditwatch.client")
    server = await asyncio.to_thread(ServerProcess(database_url).start)
    port = server.port
    patient = RetryPolicy(max_attempts=1_000, initial_backoff=0.05, max_backoff=0.5)
    try:
        async with CreditwatchClient(
            server.address, tenant.api_key, retry=patient, default_timeout=90
        ) as client:
            watch_list = await client.watch_lists.create("Survives restarts")
            await asyncio.to_thread(server.stop)

            pending = asyncio.create_task(client.watch_lists.get(watch_list.name))
            await asyncio.sleep(1.0)
            assert not pending.done(), "the call should be retrying while the server is down"

            await asyncio.to_thread(server.start)
            assert server.port == port, "ServerProcess must reuse its port on restart"
            got = await asyncio.wait_for(pending, 60)
            assert got.name == watch_list.name
    finally:
        await asyncio.to_thread(server.stop)
    retries = [r for r in caplog.records if r.getMessage() == "retrying after UNAVAILABLE"]
    assert len(retries) >= 2


async def test_without_retries_or_time_left_unavailable_is_raised(tenant: TenantKey) -> None:
    # A bound socket that never listens: connections are refused, and no other
    # test's server can take the port meanwhile.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        nowhere = "watchLists/00000000-0000-0000-0000-000000000000"

        async with CreditwatchClient(address, tenant.api_key, retry=RetryPolicy.disabled()) as once:
            with pytest.raises(UnavailableError):
                await once.watch_lists.list_entries(nowhere).__anext__()

        patient = RetryPolicy(max_attempts=1_000, initial_backoff=0.05, max_backoff=0.2)
        async with CreditwatchClient(address, tenant.api_key, retry=patient) as bounded:
            started = time.monotonic()
            with pytest.raises(UnavailableError):
                await bounded.watch_lists.get(nowhere, rpc_timeout=1.5)
            elapsed = time.monotonic() - started
        assert 1.0 < elapsed < 3.0, "retries must go on until, and stop when, the timeout runs out"
