"""PortfolioService on a portfolio whose every figure is computed by hand."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest
from google.rpc import error_details_pb2
from google.type import date_pb2, money_pb2
from grpc_status import rpc_status
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.domain.paging import encode_token, fingerprint
from creditwatch.server.domain.portfolio import DEFAULT_LGD
from creditwatch.server.domain.scores import RiskClass, StoredScore
from creditwatch.server.jobs.scheduler import take_snapshots
from creditwatch.server.store import facts
from creditwatch.v1 import (
    alerts_pb2,
    portfolio_pb2,
    portfolio_pb2_grpc,
    watchlists_pb2,
    watchlists_pb2_grpc,
)
from tests.conftest import TenantKey
from tests.e2e.alerting import ref
from tests.e2e.rpc_errors import field_violations
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

P = portfolio_pb2
# (exposure, currency, PD, class); None exposure = none given, None PD = unscored.
BOOK = {
    "C1": (1_000_000, "NOK", 0.02, RiskClass.B),
    "C2": (500_000, "NOK", 0.10, RiskClass.C),
    "C3": (2_000_000, "NOK", 0.005, RiskClass.A),
    "C4": (None, "NOK", 0.30, RiskClass.D),
    "C5": (300_000, "NOK", None, None),
    "C6": (100_000, "EUR", 0.50, RiskClass.D),
}


def _units(money: money_pb2.Money) -> float:
    return money.units + money.nanos / 1e9


def _day(value: dt.date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


async def _score(
    sessions: async_sessionmaker[AsyncSession], number: str, pd: float, risk_class: RiskClass
) -> None:
    now = dt.datetime.now(dt.UTC)
    async with sessions.begin() as session:
        await facts.add_score(
            session,
            CompanyId("NO", number),
            StoredScore(pd, risk_class, risk_class, (), "hand-set", None, now),
            OverridePolicy().tag,
        )


async def _book(
    channel: grpc.aio.Channel, sessions: async_sessionmaker[AsyncSession], tenant: TenantKey
) -> tuple[str, dict[str, str]]:
    numbers = dict(zip(BOOK, norwegian_numbers(len(BOOK), start=81_600_000), strict=True))
    stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
    created = await stub.CreateWatchList(
        watchlists_pb2.CreateWatchListRequest(
            watch_list=watchlists_pb2.WatchList(display_name="hand-computed book")
        ),
        metadata=tenant.metadata,
    )
    entries = []
    for key, (exposure, currency, pd, risk_class) in BOOK.items():
        entry = watchlists_pb2.WatchListEntry(company=ref(numbers[key]), external_reference=key)
        if exposure is not None:
            entry.exposure.CopyFrom(money_pb2.Money(currency_code=currency, units=exposure))
        entries.append(entry)
        if pd is not None and risk_class is not None:
            await _score(sessions, numbers[key], pd, risk_class)
    await stub.AddEntries(
        watchlists_pb2.AddEntriesRequest(parent=created.watch_list.name, entries=entries),
        metadata=tenant.metadata,
    )
    return created.watch_list.name, numbers


async def test_summary_segments_migration_and_trend_match_the_hand_computation(
    channel: grpc.aio.Channel, sessions: async_sessionmaker[AsyncSession], tenant: TenantKey
) -> None:
    watch_list, numbers = await _book(channel, sessions, tenant)
    stub = portfolio_pb2_grpc.PortfolioServiceStub(channel)
    summary = await stub.GetPortfolioSummary(
        P.GetPortfolioSummaryRequest(
            watch_list=watch_list, reporting_currency="NOK", top_contributor_count=3
        ),
        metadata=tenant.metadata,
    )
    assert summary.loss_given_default == 0.45
    assert (summary.entry_count, summary.scored_entry_count, summary.excluded_entry_count) == (
        5,
        4,
        1,
    )
    assert _units(summary.total_exposure) == 3_800_000
    # EL = PD x 0.45 x exposure: 9,000 + 22,500 + 4,500 + 0.
    assert _units(summary.expected_loss) == 36_000
    rows = {c.risk_class: c for c in summary.classes}
    assert [c.risk_class for c in summary.classes] == [1, 2, 3, 4, 0]
    assert (rows[1].entry_count, _units(rows[1].exposure), _units(rows[1].expected_loss)) == (
        1,
        2_000_000,
        4_500,
    )
    assert rows[1].exposure_share == pytest.approx(2_000_000 / 3_800_000)
    assert (_units(rows[2].expected_loss), _units(rows[3].expected_loss)) == (9_000, 22_500)
    assert (rows[4].entry_count, _units(rows[4].exposure)) == (1, 0)
    assert (rows[0].entry_count, _units(rows[0].exposure), _units(rows[0].expected_loss)) == (
        1,
        300_000,
        0,
    )
    # (0.02 x 1M + 0.10 x 0.5M + 0.005 x 2M + 0.30 x 0) / 3.5M
    assert summary.exposure_weighted_pd == pytest.approx(80_000 / 3_500_000)
    assert [(t.external_reference, _units(t.expected_loss)) for t in summary.top_contributors] == [
        ("C2", 22_500),
        ("C1", 9_000),
        ("C3", 4_500),
    ]
    assert summary.top_contributors[0].expected_loss_share == pytest.approx(0.625)
    assert (
        summary.top_contributors[0].watch_list_entry == f"{watch_list}/entries/NO-{numbers['C2']}"
    )

    segments = await stub.ListSegments(
        P.ListSegmentsRequest(
            watch_list=watch_list, reporting_currency="NOK", splits=P.SegmentSplits(pd_split=0.05)
        ),
        metadata=tenant.metadata,
    )
    # Exposure split: upper median of the scored exposures [0, 0.5M, 1M, 2M] = 1M.
    assert _units(segments.splits.exposure_split) == 1_000_000
    by = {s.segment: s for s in segments.segments}
    assert [s.segment for s in segments.segments] == [1, 2, 3, 4]
    assert by[P.SEGMENT_HIGH_RISK_HIGH_EXPOSURE].entry_count == 0
    high_low = by[P.SEGMENT_HIGH_RISK_LOW_EXPOSURE]  # C2 and C4
    assert (high_low.entry_count, _units(high_low.exposure), _units(high_low.expected_loss)) == (
        2,
        500_000,
        22_500,
    )
    assert high_low.exposure_weighted_pd == pytest.approx(0.10)
    assert high_low.suggested_action == alerts_pb2.SUGGESTED_ACTION_REQUIRE_PREPAYMENT
    low_high = by[P.SEGMENT_LOW_RISK_HIGH_EXPOSURE]  # C1 and C3
    assert (low_high.entry_count, _units(low_high.exposure), _units(low_high.expected_loss)) == (
        2,
        3_000_000,
        13_500,
    )
    assert low_high.exposure_weighted_pd == pytest.approx(30_000 / 3_000_000)
    assert (segments.unscored_entry_count, segments.excluded_entry_count) == (1, 1)
    page = await stub.ListSegmentEntries(
        P.ListSegmentEntriesRequest(
            watch_list=watch_list,
            reporting_currency="NOK",
            segment=P.SEGMENT_LOW_RISK_HIGH_EXPOSURE,
            splits=segments.splits,
            page_size=1,
        ),
        metadata=tenant.metadata,
    )
    assert [e.external_reference for e in page.entries] == ["C1"]  # 9,000 before 4,500
    rest = await stub.ListSegmentEntries(
        P.ListSegmentEntriesRequest(
            watch_list=watch_list,
            reporting_currency="NOK",
            segment=P.SEGMENT_LOW_RISK_HIGH_EXPOSURE,
            splits=segments.splits,
            page_size=1,
            page_token=page.next_page_token,
        ),
        metadata=tenant.metadata,
    )
    assert [e.external_reference for e in rest.entries] == ["C3"]
    assert rest.next_page_token == ""

    # History: yesterday's snapshot, then C1 worsens B -> C (PD 0.08), then today's.
    today = dt.datetime.now(dt.UTC).date()
    yesterday = today - dt.timedelta(days=1)
    async with sessions.begin() as session:  # the book was scored yesterday
        await session.execute(
            text(
                "UPDATE scores SET score_time = score_time - interval '1 day'"
                " WHERE register_number = ANY(:n)"
            ),
            {"n": list(numbers.values())},
        )
    assert await take_snapshots(sessions, yesterday) >= 6
    await _score(sessions, numbers["C1"], 0.08, RiskClass.C)
    await take_snapshots(sessions, today)
    matrix = await stub.GetMigrationMatrix(
        P.GetMigrationMatrixRequest(
            watch_list=watch_list,
            reporting_currency="NOK",
            from_date=_day(yesterday),
            to_date=_day(today),
        ),
        metadata=tenant.metadata,
    )
    assert [
        (c.from_risk_class, c.to_risk_class, c.entry_count, _units(c.exposure))
        for c in matrix.cells
    ] == [
        (0, 0, 1, 300_000),
        (1, 1, 1, 2_000_000),
        (2, 3, 1, 1_000_000),
        (3, 3, 1, 500_000),
        (4, 4, 1, 0),
    ]
    assert matrix.excluded_entry_count == 1
    trend = await stub.GetRiskTrend(
        P.GetRiskTrendRequest(
            watch_list=watch_list,
            reporting_currency="NOK",
            start_date=_day(yesterday - dt.timedelta(days=5)),
            end_date=_day(today),
        ),
        metadata=tenant.metadata,
    )
    assert [p.date for p in trend.points] == [_day(yesterday), _day(today)]
    assert trend.points[0].exposure_weighted_pd == pytest.approx(80_000 / 3_500_000)
    assert trend.points[1].exposure_weighted_pd == pytest.approx(140_000 / 3_500_000)
    since = await stub.GetPortfolioSummary(
        P.GetPortfolioSummaryRequest(
            watch_list=watch_list, reporting_currency="NOK", since_date=_day(yesterday)
        ),
        metadata=tenant.metadata,
    )
    assert since.exposure_weighted_pd == pytest.approx(140_000 / 3_500_000)
    assert since.exposure_weighted_pd_at_since_date == pytest.approx(80_000 / 3_500_000)


async def test_errors_name_the_field_or_the_missing_snapshot(
    channel: grpc.aio.Channel,
    sessions: async_sessionmaker[AsyncSession],
    tenant: TenantKey,
    other_tenant: TenantKey,
) -> None:
    watch_list, _ = await _book(channel, sessions, tenant)
    stub = portfolio_pb2_grpc.PortfolioServiceStub(channel)
    long_ago = _day(dt.date(2020, 1, 1))
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetPortfolioSummary(
            P.GetPortfolioSummaryRequest(
                watch_list=watch_list, reporting_currency="NOK", since_date=long_ago
            ),
            metadata=tenant.metadata,
        )
    assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(missing.value)  # type: ignore[arg-type]
    assert status is not None
    failure = error_details_pb2.PreconditionFailure()
    status.details[0].Unpack(failure)
    assert [(v.type, v.subject) for v in failure.violations] == [("NO_SNAPSHOT", "since_date")]
    with pytest.raises(grpc.aio.AioRpcError) as foreign:
        await stub.GetPortfolioSummary(
            P.GetPortfolioSummaryRequest(watch_list=watch_list, reporting_currency="NOK"),
            metadata=other_tenant.metadata,
        )
    assert foreign.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.GetPortfolioSummary(
            P.GetPortfolioSummaryRequest(
                watch_list=watch_list, reporting_currency="nok", loss_given_default=1.5
            ),
            metadata=tenant.metadata,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A bad split is INVALID_ARGUMENT whatever the watch list (here: none),
    # and told together with the request's other problems.
    nowhere = "watchLists/0f6c3c1e-6f3a-4a59-9d8e-2b7d6c1f0a11"
    bad_splits = P.SegmentSplits(
        pd_split=1.5, exposure_split=money_pb2.Money(currency_code="EUR", units=5)
    )
    with pytest.raises(grpc.aio.AioRpcError) as splits:
        await stub.ListSegments(
            P.ListSegmentsRequest(watch_list=nowhere, reporting_currency="NOK", splits=bad_splits),
            metadata=tenant.metadata,
        )
    assert splits.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(splits.value)) == {
        "splits.pd_split",
        "splits.exposure_split.currency_code",
    }
    with pytest.raises(grpc.aio.AioRpcError) as entries:
        await stub.ListSegmentEntries(
            P.ListSegmentEntriesRequest(
                watch_list=nowhere,
                reporting_currency="NOK",
                segment=P.SEGMENT_LOW_RISK_LOW_EXPOSURE,
                splits=bad_splits,
                page_size=-1,
            ),
            metadata=tenant.metadata,
        )
    assert entries.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(entries.value)) == {
        "splits.pd_split",
        "splits.exposure_split.currency_code",
        "page_size",
    }


async def test_forged_segment_page_tokens_are_invalid_argument(
    channel: grpc.aio.Channel, sessions: async_sessionmaker[AsyncSession], tenant: TenantKey
) -> None:
    watch_list, _ = await _book(channel, sessions, tenant)
    stub = portfolio_pb2_grpc.PortfolioServiceStub(channel)
    segment = P.SEGMENT_LOW_RISK_HIGH_EXPOSURE

    def request(token: str) -> P.ListSegmentEntriesRequest:
        return P.ListSegmentEntriesRequest(
            watch_list=watch_list,
            reporting_currency="NOK",
            segment=segment,
            page_size=1,
            page_token=token,
        )

    issued = await stub.ListSegmentEntries(request(""), metadata=tenant.metadata)
    assert issued.next_page_token  # the control: the server's own token pages on
    second = await stub.ListSegmentEntries(
        request(issued.next_page_token), metadata=tenant.metadata
    )

    # Tokens for the same filters (so their fingerprint matches), with a key
    # of the right types but values no request can give.
    digest = fingerprint(
        tenant.tenant_id,
        watch_list,
        "NOK",
        int(segment),
        DEFAULT_LGD,
        P.SegmentSplits().SerializeToString().hex(),
    )
    # An earlier release's token, an offset, still pages on.
    split = str(issued.splits.exposure_split.units)
    legacy = encode_token((1, issued.splits.pd_split, split), digest)
    on = await stub.ListSegmentEntries(request(legacy), metadata=tenant.metadata)
    assert [e.company for e in on.entries] == [e.company for e in second.entries]
    for key in (
        (0.1, "0", "-1", "923609016", "NO"),  # the last entry's loss
        (0.1, "0", "NaN", "923609016", "NO"),
        (0.1, "0", "1E-16384", "923609016", "NO"),
        (0.1, "0", "1E+200000", "923609016", "NO"),
        (0.1, "0", "1", "9" * 17, "NO"),  # its register number
        (0.1, "0", "1", "923609016", "NOR"),  # its country
        (7.5, "0", "1", "923609016", "NO"),
        (0.1, "-1", "1", "923609016", "NO"),
        (0, 0.1, "0"),  # an earlier release's offset
        (-5, 0.1, "0"),
        (2**63, 0.1, "0"),
        (1, 7.5, "0"),  # PD split
        (1, float("nan"), "0"),
        (1, 0.1, "not-a-number"),  # exposure split
        (1, 0.1, "NaN"),
        (1, 0.1, "-Infinity"),
        (1, 0.1, "-1"),
        (1, 0.1, "1E+20"),
        (1, 0.1, "1E-99"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListSegmentEntries(
                request(encode_token(key, digest)), metadata=tenant.metadata
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, key
        assert "page_token" in field_violations(caught.value), key


async def test_a_total_past_what_money_carries_is_out_of_range_not_internal(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    # 9,300 entries of nearly 10^15 NOK each: every one within its cap, their
    # sum (9.3 x 10^18) past google.type.Money's int64 units.
    lists = watchlists_pb2_grpc.WatchListServiceStub(channel)
    created = await lists.CreateWatchList(
        watchlists_pb2.CreateWatchListRequest(
            watch_list=watchlists_pb2.WatchList(display_name="too much")
        ),
        metadata=tenant.metadata,
    )
    huge = money_pb2.Money(currency_code="NOK", units=10**15 - 1)
    await lists.AddEntries(
        watchlists_pb2.AddEntriesRequest(
            parent=created.watch_list.name,
            entries=[
                watchlists_pb2.WatchListEntry(company=ref(number), exposure=huge)
                for number in norwegian_numbers(9_300, start=81_300_000)
            ],
        ),
        metadata=tenant.metadata,
    )
    stub = portfolio_pb2_grpc.PortfolioServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetPortfolioSummary(
            P.GetPortfolioSummaryRequest(
                watch_list=created.watch_list.name, reporting_currency="NOK"
            ),
            metadata=tenant.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "int64" in (caught.value.details() or "")
