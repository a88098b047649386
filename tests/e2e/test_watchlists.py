"""WatchListService end to end: a real server process, real PostgreSQL, gRPC over loopback."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.type import money_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.domain.scores import RiskClass, StoredScore
from creditwatch.server.store.scores import ScoreStore
from creditwatch.v1 import common_pb2, watchlists_pb2, watchlists_pb2_grpc
from tests.conftest import TenantKey
from tests.e2e.rpc_errors import field_violations
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio


def _stub(channel: grpc.aio.Channel) -> watchlists_pb2_grpc.WatchListServiceStub:
    return watchlists_pb2_grpc.WatchListServiceStub(channel)


async def _create(
    stub: watchlists_pb2_grpc.WatchListServiceStub, tenant: TenantKey, name: str = "Key accounts"
) -> str:
    response = await stub.CreateWatchList(
        watchlists_pb2.CreateWatchListRequest(
            watch_list=watchlists_pb2.WatchList(display_name=name, pd_threshold=0.05)
        ),
        metadata=tenant.metadata,
    )
    return response.watch_list.name


def _entry(number: str, exposure: int = 1000) -> watchlists_pb2.WatchListEntry:
    return watchlists_pb2.WatchListEntry(
        company=common_pb2.CompanyRef(country="NO", register_number=number),
        exposure=money_pb2.Money(currency_code="NOK", units=exposure),
    )


async def test_crud_round_trip(channel: grpc.aio.Channel, tenant: TenantKey) -> None:
    stub = _stub(channel)
    name = await _create(stub, tenant, "Nordic SMEs")
    got = (
        await stub.GetWatchList(
            watchlists_pb2.GetWatchListRequest(name=name), metadata=tenant.metadata
        )
    ).watch_list
    assert got.display_name == "Nordic SMEs"
    assert got.pd_threshold == pytest.approx(0.05)
    assert got.entry_count == 0
    assert got.create_time.seconds > 0

    updated = (
        await stub.UpdateWatchList(
            watchlists_pb2.UpdateWatchListRequest(
                watch_list=watchlists_pb2.WatchList(
                    name=name, display_name="Renamed", description="ignored: not in mask"
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=tenant.metadata,
        )
    ).watch_list
    assert updated.display_name == "Renamed"
    assert updated.description == ""
    assert updated.pd_threshold == pytest.approx(0.05)

    second = await _create(stub, tenant, "Second")
    listed = await stub.ListWatchLists(
        watchlists_pb2.ListWatchListsRequest(page_size=1), metadata=tenant.metadata
    )
    assert [w.name for w in listed.watch_lists] == [name]
    assert listed.next_page_token
    rest = await stub.ListWatchLists(
        watchlists_pb2.ListWatchListsRequest(page_size=1, page_token=listed.next_page_token),
        metadata=tenant.metadata,
    )
    assert [w.name for w in rest.watch_lists] == [second]

    await stub.AddEntries(
        watchlists_pb2.AddEntriesRequest(
            parent=name, entries=[_entry(n) for n in norwegian_numbers(3)]
        ),
        metadata=tenant.metadata,
    )
    deleted = await stub.DeleteWatchList(
        watchlists_pb2.DeleteWatchListRequest(name=name), metadata=tenant.metadata
    )
    assert deleted.deleted_entry_count == 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetWatchList(
            watchlists_pb2.GetWatchListRequest(name=name), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_create_is_idempotent_with_request_id(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    stub = _stub(channel)
    request = watchlists_pb2.CreateWatchListRequest(
        watch_list=watchlists_pb2.WatchList(display_name="Once"), request_id="9f0c7c1e-retry"
    )
    first = await stub.CreateWatchList(request, metadata=tenant.metadata)
    again = await stub.CreateWatchList(request, metadata=tenant.metadata)
    assert first.watch_list.name == again.watch_list.name
    listed = await stub.ListWatchLists(
        watchlists_pb2.ListWatchListsRequest(), metadata=tenant.metadata
    )
    assert len(listed.watch_lists) == 1


async def test_a_request_id_older_than_24_hours_creates_again(
    channel: grpc.aio.Channel, sessions: async_sessionmaker[AsyncSession], tenant: TenantKey
) -> None:
    stub = _stub(channel)
    request = watchlists_pb2.CreateWatchListRequest(
        watch_list=watchlists_pb2.WatchList(display_name="Daily"), request_id="daily-import"
    )
    first = await stub.CreateWatchList(request, metadata=tenant.metadata)
    async with sessions.begin() as session:
        await session.execute(
            text(
                "UPDATE idempotency_keys SET create_time = now() - interval '25 hours' "
                "WHERE tenant_id = :tenant"
            ),
            {"tenant": tenant.tenant_id},
        )
    later = await stub.CreateWatchList(request, metadata=tenant.metadata)
    assert later.watch_list.name != first.watch_list.name
    again = await stub.CreateWatchList(request, metadata=tenant.metadata)
    assert again.watch_list.name == later.watch_list.name


async def test_ten_thousand_entries_in_one_call_then_paged(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    stub = _stub(channel)
    name = await _create(stub, tenant)
    numbers = norwegian_numbers(10_000)
    added = await stub.AddEntries(
        watchlists_pb2.AddEntriesRequest(
            parent=name, entries=[_entry(n, i) for i, n in enumerate(numbers)]
        ),
        metadata=tenant.metadata,
    )
    assert (added.added_count, added.updated_count, added.entry_count) == (10_000, 0, 10_000)

    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListEntries(
            watchlists_pb2.ListEntriesRequest(parent=name, page_size=1_500, page_token=token),
            metadata=tenant.metadata,
        )
        pages += 1
        seen.extend(e.company.register_number for e in page.entries)
        token = page.next_page_token
        if not token:
            break
    assert pages == 7
    assert seen == sorted(numbers)
    first = await stub.GetEntry(
        watchlists_pb2.GetEntryRequest(name=f"{name}/entries/NO-{numbers[5]}"),
        metadata=tenant.metadata,
    )
    assert first.entry.exposure.units == 5
    assert first.entry.exposure.currency_code == "NOK"


async def test_upsert_by_company_updates_instead_of_duplicating(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    stub = _stub(channel)
    name = await _create(stub, tenant)
    numbers = norwegian_numbers(5)
    await stub.AddEntries(
        watchlists_pb2.AddEntriesRequest(parent=name, entries=[_entry(n, 10) for n in numbers]),
        metadata=tenant.metadata,
    )
    again = await stub.AddEntries(
        watchlists_pb2.AddEntriesRequest(parent=name, entries=[_entry(n, 20) for n in numbers[:3]]),
        metadata=tenant.metadata,
    )
    assert (again.added_count, again.updated_count, again.entry_count) == (0, 3, 5)
    page = await stub.ListEntries(
        watchlists_pb2.ListEntriesRequest(parent=name), metadata=tenant.metadata
    )
    assert [e.exposure.units for e in page.entries] == [20, 20, 20, 10, 10]

    removed = await stub.RemoveEntries(
        watchlists_pb2.RemoveEntriesRequest(
            parent=name,
            companies=[
                common_pb2.CompanyRef(country="NO", register_number=n)
                for n in (numbers[0], numbers[1])
            ]
            + [common_pb2.CompanyRef(country="NO", register_number=norwegian_numbers(6)[5])],
        ),
        metadata=tenant.metadata,
    )
    assert (removed.removed_count, removed.not_found_count) == (2, 1)
    got = await stub.GetWatchList(
        watchlists_pb2.GetWatchListRequest(name=name), metadata=tenant.metadata
    )
    assert got.watch_list.entry_count == 3


async def test_bad_check_digit_names_field_and_index_and_writes_nothing(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    stub = _stub(channel)
    name = await _create(stub, tenant)
    entries = [_entry(n) for n in norwegian_numbers(50)]
    good = entries[17].company.register_number
    entries[17].company.register_number = good[:-1] + str((int(good[-1]) + 1) % 10)
    entries[30].company.CopyFrom(common_pb2.CompanyRef(country="SE", register_number="556036-0794"))
    entries[40].exposure.units = -5
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AddEntries(
            watchlists_pb2.AddEntriesRequest(parent=name, entries=entries), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = field_violations(caught.value)
    assert set(violations) == {
        "entries[17].company.register_number",
        "entries[30].company.register_number",
        "entries[40].exposure.units",
    }
    assert "check digit" in violations["entries[17].company.register_number"]
    assert "Luhn" in violations["entries[30].company.register_number"]
    got = await stub.GetWatchList(
        watchlists_pb2.GetWatchListRequest(name=name), metadata=tenant.metadata
    )
    assert got.watch_list.entry_count == 0
    page = await stub.ListEntries(
        watchlists_pb2.ListEntriesRequest(parent=name), metadata=tenant.metadata
    )
    assert len(page.entries) == 0


async def test_a_batch_with_every_entry_wrong_still_gets_a_precise_status(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    stub = _stub(channel)
    name = await _create(stub, tenant)
    # 10,000 numbers that all fail the register's first-digit rule.
    entries = [_entry(f"1{i:08d}") for i in range(10_000)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AddEntries(
            watchlists_pb2.AddEntriesRequest(parent=name, entries=entries), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # not a trailer overflow
    violations = field_violations(caught.value)
    assert len(violations) == 21
    assert "entries[0].company.register_number" in violations
    assert "9,980 more" in violations[""]


async def test_valid_identifiers_of_every_country_are_accepted(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    stub = _stub(channel)
    name = await _create(stub, tenant)
    refs = [("NO", "923 609 016"), ("SE", "556036-0793"), ("FI", "0112038-9"), ("DK", "10150817")]
    await stub.AddEntries(
        watchlists_pb2.AddEntriesRequest(
            parent=name,
            entries=[
                watchlists_pb2.WatchListEntry(
                    company=common_pb2.CompanyRef(country=c, register_number=n)
                )
                for c, n in refs
            ],
        ),
        metadata=tenant.metadata,
    )
    page = await stub.ListEntries(
        watchlists_pb2.ListEntriesRequest(parent=name), metadata=tenant.metadata
    )
    assert [(e.company.country, e.company.register_number) for e in page.entries] == [
        ("DK", "10150817"),
        ("FI", "0112038-9"),
        ("NO", "923609016"),
        ("SE", "5560360793"),
    ]


async def test_oversized_batch_is_refused(channel: grpc.aio.Channel, tenant: TenantKey) -> None:
    stub = _stub(channel)
    name = await _create(stub, tenant)
    entries = [_entry(n) for n in norwegian_numbers(10_001)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AddEntries(
            watchlists_pb2.AddEntriesRequest(parent=name, entries=entries), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "entries" in field_violations(caught.value)


async def test_duplicate_company_in_one_call_is_refused(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    stub = _stub(channel)
    name = await _create(stub, tenant)
    n = norwegian_numbers(1)[0]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AddEntries(
            watchlists_pb2.AddEntriesRequest(parent=name, entries=[_entry(n), _entry(n)]),
            metadata=tenant.metadata,
        )
    assert field_violations(caught.value) == {
        "entries[1].company": "duplicate of entries[0] in this call"
    }


async def test_other_tenants_watch_list_is_not_found(
    channel: grpc.aio.Channel, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    stub = _stub(channel)
    name = await _create(stub, tenant)
    await stub.AddEntries(
        watchlists_pb2.AddEntriesRequest(parent=name, entries=[_entry(norwegian_numbers(1)[0])]),
        metadata=tenant.metadata,
    )
    calls = [
        stub.GetWatchList(
            watchlists_pb2.GetWatchListRequest(name=name), metadata=other_tenant.metadata
        ),
        stub.ListEntries(
            watchlists_pb2.ListEntriesRequest(parent=name), metadata=other_tenant.metadata
        ),
        stub.AddEntries(
            watchlists_pb2.AddEntriesRequest(
                parent=name, entries=[_entry(norwegian_numbers(2)[1])]
            ),
            metadata=other_tenant.metadata,
        ),
        stub.DeleteWatchList(
            watchlists_pb2.DeleteWatchListRequest(name=name), metadata=other_tenant.metadata
        ),
        stub.UpdateWatchList(
            watchlists_pb2.UpdateWatchListRequest(
                watch_list=watchlists_pb2.WatchList(name=name, display_name="stolen"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=other_tenant.metadata,
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    mine = await stub.GetWatchList(
        watchlists_pb2.GetWatchListRequest(name=name), metadata=tenant.metadata
    )
    assert (mine.watch_list.display_name, mine.watch_list.entry_count) == ("Key accounts", 1)
    theirs = await stub.ListWatchLists(
        watchlists_pb2.ListWatchListsRequest(), metadata=other_tenant.metadata
    )
    assert len(theirs.watch_lists) == 0


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer nonsense"),),
        (("authorization", "Basic abc"),),
        (("authorization", "Bearer cw_" + "0" * 32 + "_" + "0" * 12 + "_" + "A" * 43),),
    ],
    ids=["missing", "malformed", "wrong-scheme", "unknown-key"],
)
async def test_calls_without_a_valid_key_are_unauthenticated(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _stub(channel).ListWatchLists(
            watchlists_pb2.ListWatchListsRequest(), metadata=metadata
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_filter_entries_by_latest_risk_class(
    channel: grpc.aio.Channel, tenant: TenantKey, sessions: async_sessionmaker[AsyncSession]
) -> None:
    from datetime import UTC, datetime

    stub = _stub(channel)
    name = await _create(stub, tenant)
    numbers = norwegian_numbers(6)
    await stub.AddEntries(
        watchlists_pb2.AddEntriesRequest(parent=name, entries=[_entry(n) for n in numbers]),
        metadata=tenant.metadata,
    )
    scores = ScoreStore(sessions)
    now = datetime.now(UTC)
    for number, cls in zip(
        numbers[:4], [RiskClass.A, RiskClass.D, RiskClass.C, RiskClass.A], strict=True
    ):
        await scores.record(
            CompanyId("NO", number),
            StoredScore(0.5, RiskClass.B, RiskClass.B, (), "test-model", None, now),
            OverridePolicy().tag,
        )
        await scores.record(
            CompanyId("NO", number),
            StoredScore(0.1 * int(cls), cls, cls, (), "test-model", None, now),
            OverridePolicy().tag,
        )
    page = await stub.ListEntries(
        watchlists_pb2.ListEntriesRequest(
            parent=name, risk_classes=[common_pb2.RISK_CLASS_A, common_pb2.RISK_CLASS_D]
        ),
        metadata=tenant.metadata,
    )
    assert [e.company.register_number for e in page.entries] == [numbers[0], numbers[1], numbers[3]]
    assert [e.latest_score.risk_class for e in page.entries] == [1, 4, 1]
    unscored = await stub.GetEntry(
        watchlists_pb2.GetEntryRequest(name=f"{name}/entries/NO-{numbers[5]}"),
        metadata=tenant.metadata,
    )
    assert not unscored.entry.HasField("latest_score")


async def test_bad_paging_and_enums_are_named(channel: grpc.aio.Channel, tenant: TenantKey) -> None:
    stub = _stub(channel)
    name = await _create(stub, tenant)
    await stub.AddEntries(
        watchlists_pb2.AddEntriesRequest(
            parent=name, entries=[_entry(n) for n in norwegian_numbers(3)]
        ),
        metadata=tenant.metadata,
    )
    first = await stub.ListEntries(
        watchlists_pb2.ListEntriesRequest(parent=name, page_size=1), metadata=tenant.metadata
    )
    cases = [
        (watchlists_pb2.ListEntriesRequest(parent=name, page_token="not-a-token"), "page_token"),
        (
            watchlists_pb2.ListEntriesRequest(
                parent=name, page_size=1, page_token=first.next_page_token, risk_classes=[1]
            ),
            "page_token",
        ),
        (watchlists_pb2.ListEntriesRequest(parent=name, page_size=10_001), "page_size"),
        (watchlists_pb2.ListEntriesRequest(parent=name, risk_classes=[9]), "risk_classes[0]"),
        (watchlists_pb2.ListEntriesRequest(parent="watchLists/nope"), "parent"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListEntries(request, metadata=tenant.metadata)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in field_violations(caught.value), field

    bad_rules = watchlists_pb2.CreateWatchListRequest(
        watch_list=watchlists_pb2.WatchList(
            display_name="x",
            pd_threshold=1.5,
            alert_rules=watchlists_pb2.AlertRules(alert_types=[999]),
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateWatchList(bad_rules, metadata=tenant.metadata)
    assert set(field_violations(caught.value)) == {
        "watch_list.pd_threshold",
        "watch_list.alert_rules.alert_types[0]",
    }

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateWatchList(
            watchlists_pb2.UpdateWatchListRequest(
                watch_list=watchlists_pb2.WatchList(name=name),
                update_mask=field_mask_pb2.FieldMask(paths=["entry_count"]),
            ),
            metadata=tenant.metadata,
        )
    assert "update_mask.paths[0]" in field_violations(caught.value)


async def test_forged_page_tokens_are_invalid_argument_not_internal(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    from creditwatch.server.domain.paging import encode_token, fingerprint

    stub = _stub(channel)
    name = await _create(stub, tenant)
    list_id = name.split("/")[1]
    lists = fingerprint(tenant.tenant_id, "watchLists")
    entries = fingerprint(tenant.tenant_id, list_id, [], "")
    some_id = "0f6c3c1e-6f3a-4a59-9d8e-2b7d6c1f0a11"
    forged = [
        (
            stub.ListWatchLists,
            watchlists_pb2.ListWatchListsRequest(
                page_token=encode_token(("not-a-time", "x"), lists)
            ),
        ),
        (
            stub.ListWatchLists,
            watchlists_pb2.ListWatchListsRequest(page_token=encode_token((1,), lists)),
        ),
        (  # a time without its UTC offset: the server never issues one
            stub.ListWatchLists,
            watchlists_pb2.ListWatchListsRequest(
                page_token=encode_token(("2026-01-01T00:00:00", some_id), lists)
            ),
        ),
        *(  # times that are no time in UTC (year 0 or 10000 there)
            (
                stub.ListWatchLists,
                watchlists_pb2.ListWatchListsRequest(
                    page_token=encode_token((stamp, some_id), lists)
                ),
            )
            for stamp in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00")
        ),
        (
            stub.ListEntries,
            watchlists_pb2.ListEntriesRequest(
                parent=name, page_token=encode_token((1, 2), entries)
            ),
        ),
        (  # text PostgreSQL cannot hold: NUL, a lone surrogate
            stub.ListEntries,
            watchlists_pb2.ListEntriesRequest(
                parent=name, page_token=encode_token(("NO", "92360\x00"), entries)
            ),
        ),
        (
            stub.ListEntries,
            watchlists_pb2.ListEntriesRequest(
                parent=name, page_token=encode_token(("\ud800", "1"), entries)
            ),
        ),
    ]
    for call, request in forged:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request, metadata=tenant.metadata)  # type: ignore[operator]
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert "page_token" in field_violations(caught.value)


async def test_another_tenants_page_token_is_refused(
    channel: grpc.aio.Channel, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    stub = _stub(channel)
    for owner, prefix in ((other_tenant, "B"), (tenant, "A")):
        for i in range(3):
            await _create(stub, owner, f"{prefix}{i}")
    mine = await stub.ListWatchLists(
        watchlists_pb2.ListWatchListsRequest(page_size=2), metadata=tenant.metadata
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListWatchLists(
            watchlists_pb2.ListWatchListsRequest(page_token=mine.next_page_token),
            metadata=other_tenant.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in field_violations(caught.value)
    rest = await stub.ListWatchLists(
        watchlists_pb2.ListWatchListsRequest(page_token=mine.next_page_token),
        metadata=tenant.metadata,
    )
    assert [w.display_name for w in rest.watch_lists] == ["A2"]


async def test_text_postgresql_cannot_store_is_invalid_argument_with_every_field_named(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    stub = _stub(channel)
    for watch_list, field in (
        (watchlists_pb2.WatchList(display_name="Key\x00accounts"), "watch_list.display_name"),
        (watchlists_pb2.WatchList(display_name="K", description="\x00"), "watch_list.description"),
        (watchlists_pb2.WatchList(display_name="K", labels={"desk": "a\x00"}), "watch_list.labels"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateWatchList(
                watchlists_pb2.CreateWatchListRequest(watch_list=watch_list),
                metadata=tenant.metadata,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value
        assert any(f.startswith(field) for f in field_violations(caught.value)), field
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateWatchList(
            watchlists_pb2.CreateWatchListRequest(
                watch_list=watchlists_pb2.WatchList(display_name="K"), request_id="r\x00"
            ),
            metadata=tenant.metadata,
        )
    assert "request_id" in field_violations(caught.value)
    name = await _create(stub, tenant)
    # One entry wrong three ways: every field named in one answer.
    (number,) = norwegian_numbers(1, start=86_170_000)
    wrong = _entry(number[:-1] + str((int(number[-1]) + 1) % 10))
    wrong.external_reference = "cust\x00omer"
    wrong.labels["Bad Key"] = "x"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AddEntries(
            watchlists_pb2.AddEntriesRequest(parent=name, entries=[wrong]),
            metadata=tenant.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(caught.value)) == {
        "entries[0].company.register_number",
        "entries[0].external_reference",
        "entries[0].labels['Bad Key']",
    }
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListEntries(
            watchlists_pb2.ListEntriesRequest(parent=name, label="desk=\x00"),
            metadata=tenant.metadata,
        )
    assert "label" in field_violations(caught.value)
