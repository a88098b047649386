"""A `request_id` reused for a different request is refused, not replayed.

DecideCreditLimit, CreateWatchList and AddEntries replay the first call's
result when a request is repeated with its `request_id`. A repeat that asks
something else is INVALID_ARGUMENT naming `request_id`, and changes nothing;
keys stored before migration 0018 (no fingerprint) replay as they always did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import grpc
import pytest
from google.type import money_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.v1 import (
    companies_pb2,
    companies_pb2_grpc,
    limits_pb2,
    limits_pb2_grpc,
    watchlists_pb2,
    watchlists_pb2_grpc,
)
from tests.conftest import TenantKey
from tests.e2e.alerting import ref
from tests.e2e.rpc_errors import field_violations
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

WL = watchlists_pb2


async def _refused(call: Awaitable[object]) -> dict[str, str]:
    """The BadRequest violations of a call that must fail with INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return field_violations(caught.value)


async def _as_before_fingerprints(
    sessions: async_sessionmaker[AsyncSession], tenant: TenantKey
) -> None:
    """Make the tenant's keys look as if stored before migration 0018."""
    async with sessions.begin() as session:
        await session.execute(
            text("UPDATE idempotency_keys SET fingerprint = NULL WHERE tenant_id = :t"),
            {"t": tenant.tenant_id},
        )


def _nok(units: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="NOK", units=units)


def _ask(number: str, units: int, **fields: object) -> limits_pb2.DecideCreditLimitRequest:
    asked: dict[str, object] = {
        "company": ref(number),
        "requested_amount": _nok(units),
        "requested_payment_terms_days": 60,
    }
    asked.update(fields)
    return limits_pb2.DecideCreditLimitRequest(**asked)  # type: ignore[arg-type]


async def _with_statements(channel: grpc.aio.Channel, feed: TenantKey, numbers: list[str]) -> None:
    stub = companies_pb2_grpc.CompanyDataServiceStub(channel)
    for number in numbers:
        await stub.SubmitFinancialStatement(
            companies_pb2.SubmitFinancialStatementRequest(
                company=ref(number), financial_statement=healthy()
            ),
            metadata=feed.metadata,
        )


async def _limits(
    stub: limits_pb2_grpc.CreditLimitServiceAsyncStub, tenant: TenantKey
) -> list[limits_pb2.CreditLimit]:
    listed = await stub.ListCreditLimits(
        limits_pb2.ListCreditLimitsRequest(), metadata=tenant.metadata
    )
    return list(listed.credit_limits)


async def test_a_decision_id_replays_the_same_request_and_refuses_any_other(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    buyer, other_buyer = norwegian_numbers(2, start=96_130_000)
    await _with_statements(channel, feed, [buyer, other_buyer])
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)

    async def decide(
        request: limits_pb2.DecideCreditLimitRequest,
    ) -> limits_pb2.CreditLimitDecision:
        response = await stub.DecideCreditLimit(request, metadata=tenant.metadata)
        return response.decision

    asked = _ask(buyer, 10_000, request_id="order-1")
    first = await decide(asked)
    assert first.outcome == limits_pb2.CREDIT_LIMIT_OUTCOME_APPROVED
    assert await decide(asked) == first

    different = {
        "amount": _ask(buyer, 20_000, request_id="order-1"),
        "terms": _ask(buyer, 10_000, request_id="order-1", requested_payment_terms_days=30),
        "exposure": _ask(buyer, 10_000, request_id="order-1", current_exposure=_nok(500)),
        "reference": _ask(buyer, 10_000, request_id="order-1", external_reference="crm-7"),
        "buyer": _ask(other_buyer, 10_000, request_id="order-1"),
    }
    for what, request in different.items():
        violations = await _refused(decide(request))
        assert list(violations) == ["request_id"], what

    # Nothing was decided: the one standing limit is the first decision's.
    [limit] = await _limits(stub, tenant)
    assert limit.company.register_number == buyer
    assert limit.amount.units == 10_000
    assert limit.latest_decision == first
    assert await decide(asked) == first  # and the key still replays


async def test_a_decision_key_stored_before_fingerprints_replays_whatever_is_asked(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    feed: TenantKey,
    tenant: TenantKey,
) -> None:
    [buyer] = norwegian_numbers(1, start=96_135_000)
    await _with_statements(channel, feed, [buyer])
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)
    first = await stub.DecideCreditLimit(
        _ask(buyer, 10_000, request_id="legacy-order"), metadata=tenant.metadata
    )
    await _as_before_fingerprints(sessions, tenant)

    again = await stub.DecideCreditLimit(
        _ask(buyer, 20_000, request_id="legacy-order"), metadata=tenant.metadata
    )
    assert again.decision == first.decision
    [limit] = await _limits(stub, tenant)
    assert limit.amount.units == 10_000


async def _watch_lists(
    stub: watchlists_pb2_grpc.WatchListServiceAsyncStub, tenant: TenantKey
) -> list[WL.WatchList]:
    listed = await stub.ListWatchLists(WL.ListWatchListsRequest(), metadata=tenant.metadata)
    return list(listed.watch_lists)


def _create(request_id: str, **watch_list: object) -> WL.CreateWatchListRequest:
    return WL.CreateWatchListRequest(
        watch_list=WL.WatchList(**watch_list),  # type: ignore[arg-type]
        request_id=request_id,
    )


async def test_a_create_id_replays_the_same_watch_list_and_refuses_another(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
    asked = _create("create-1", display_name="Nordics", pd_threshold=0.05, labels={"desk": "oslo"})
    first = await stub.CreateWatchList(asked, metadata=tenant.metadata)
    again = await stub.CreateWatchList(asked, metadata=tenant.metadata)
    assert again.watch_list.name == first.watch_list.name

    different = [
        _create("create-1", display_name="Baltics", pd_threshold=0.05, labels={"desk": "oslo"}),
        _create("create-1", display_name="Nordics", pd_threshold=0.10, labels={"desk": "oslo"}),
        _create("create-1", display_name="Nordics", pd_threshold=0.05, labels={"desk": "riga"}),
        _create(
            "create-1",
            display_name="Nordics",
            pd_threshold=0.05,
            labels={"desk": "oslo"},
            alert_rules=WL.AlertRules(minimum_class_change=2),
        ),
    ]
    for request in different:
        violations = await _refused(stub.CreateWatchList(request, metadata=tenant.metadata))
        assert list(violations) == ["request_id"]
    [only] = await _watch_lists(stub, tenant)
    assert (only.name, only.display_name) == (first.watch_list.name, "Nordics")


async def test_two_racing_creates_that_share_an_id_but_differ_make_one_watch_list(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
    outcomes = await asyncio.gather(
        *(
            stub.CreateWatchList(_create("race-1", display_name=name), metadata=tenant.metadata)
            for name in ("First", "Second")
        ),
        return_exceptions=True,
    )
    created = [o for o in outcomes if isinstance(o, WL.CreateWatchListResponse)]
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(created) == len(refused) == 1
    assert refused[0].code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(field_violations(refused[0])) == ["request_id"]
    [only] = await _watch_lists(stub, tenant)
    assert only.name == created[0].watch_list.name


async def test_a_create_key_stored_before_fingerprints_replays_whatever_is_asked(
    channel: grpc.aio.Channel, sessions: async_sessionmaker[AsyncSession], tenant: TenantKey
) -> None:
    stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
    first = await stub.CreateWatchList(
        _create("legacy-create", display_name="Old"), metadata=tenant.metadata
    )
    await _as_before_fingerprints(sessions, tenant)
    again = await stub.CreateWatchList(
        _create("legacy-create", display_name="New"), metadata=tenant.metadata
    )
    assert (again.watch_list.name, again.watch_list.display_name) == (first.watch_list.name, "Old")
    assert len(await _watch_lists(stub, tenant)) == 1


def _entry(number: str, exposure: int = 1_000) -> WL.WatchListEntry:
    return WL.WatchListEntry(company=ref(number), exposure=_nok(exposure))


def _add(parent: str, entries: list[WL.WatchListEntry], request_id: str) -> WL.AddEntriesRequest:
    return WL.AddEntriesRequest(parent=parent, entries=entries, request_id=request_id)


async def _entries(
    stub: watchlists_pb2_grpc.WatchListServiceAsyncStub, tenant: TenantKey, parent: str
) -> dict[str, int]:
    listed = await stub.ListEntries(WL.ListEntriesRequest(parent=parent), metadata=tenant.metadata)
    return {e.company.register_number: e.exposure.units for e in listed.entries}


async def test_an_add_entries_id_replays_the_same_batch_and_refuses_another(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
    lists = [
        (await stub.CreateWatchList(_create("", display_name=n), metadata=tenant.metadata))
        for n in ("Main", "Other")
    ]
    main, other = (created.watch_list.name for created in lists)
    a, b, c, extra = norwegian_numbers(4, start=96_140_000)
    batch = [_entry(a), _entry(b), _entry(c)]

    first = await stub.AddEntries(_add(main, batch, "batch-1"), metadata=tenant.metadata)
    assert (first.added_count, first.updated_count, first.entry_count) == (3, 0, 3)
    # A replay, not a second upsert (which would count three updated): the same
    # entries in another order are the same request.
    again = await stub.AddEntries(_add(main, batch[::-1], "batch-1"), metadata=tenant.metadata)
    assert again == first

    different = {
        "exposure": _add(main, [_entry(a, 2_000), _entry(b), _entry(c)], "batch-1"),
        "one more": _add(main, [*batch, _entry(extra)], "batch-1"),
        "one fewer": _add(main, batch[:2], "batch-1"),
        "watch list": _add(other, batch, "batch-1"),
    }
    for what, request in different.items():
        violations = await _refused(stub.AddEntries(request, metadata=tenant.metadata))
        assert list(violations) == ["request_id"], what

    assert await _entries(stub, tenant, main) == {a: 1_000, b: 1_000, c: 1_000}
    assert await _entries(stub, tenant, other) == {}
    assert await stub.AddEntries(_add(main, batch, "batch-1"), metadata=tenant.metadata) == first


async def test_an_add_entries_key_stored_before_fingerprints_replays_whatever_is_asked(
    channel: grpc.aio.Channel, sessions: async_sessionmaker[AsyncSession], tenant: TenantKey
) -> None:
    stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
    created = await stub.CreateWatchList(_create("", display_name="Old"), metadata=tenant.metadata)
    parent = created.watch_list.name
    a, b = norwegian_numbers(2, start=96_145_000)
    first = await stub.AddEntries(
        _add(parent, [_entry(a)], "legacy-batch"), metadata=tenant.metadata
    )
    await _as_before_fingerprints(sessions, tenant)

    again = await stub.AddEntries(
        _add(parent, [_entry(a, 5_000), _entry(b)], "legacy-batch"), metadata=tenant.metadata
    )
    assert again == first
    assert await _entries(stub, tenant, parent) == {a: 1_000}


async def test_a_reused_decision_id_is_refused_before_the_buyer_is_scored_again(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    feed: TenantKey,
    tenant: TenantKey,
) -> None:
    buyer, other_buyer = norwegian_numbers(2, start=96_148_000)
    await _with_statements(channel, feed, [buyer, other_buyer])
    stub = limits_pb2_grpc.CreditLimitServiceStub(channel)
    first = await stub.DecideCreditLimit(
        _ask(buyer, 10_000, request_id="order-9"), metadata=tenant.metadata
    )
    # The other buyer has no score (yet): a decision about it would score it
    # first, and commit that, with what that score alerts.
    async with sessions.begin() as session:
        await session.execute(
            text("DELETE FROM scores WHERE register_number = :n"), {"n": other_buyer}
        )

    async def scores() -> int:
        async with sessions() as session:
            count = await session.scalar(
                text("SELECT count(*) FROM scores WHERE register_number = :n"),
                {"n": other_buyer},
            )
        return int(count or 0)

    before = await scores()
    violations = await _refused(
        stub.DecideCreditLimit(
            _ask(other_buyer, 10_000, request_id="order-9"), metadata=tenant.metadata
        )
    )
    assert list(violations) == ["request_id"]
    assert await scores() == before == 0  # nothing was scored, so nothing alerted
    # A replay answers from the key, before any scoring too.
    again = await stub.DecideCreditLimit(
        _ask(buyer, 10_000, request_id="order-9"), metadata=tenant.metadata
    )
    assert again.decision == first.decision
