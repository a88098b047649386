"""PortfolioService: which companies drive a watch list's risk, now and over time."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import grpc
from google.type import date_pb2

from creditwatch.server.api import converters as cv
from creditwatch.server.api.auth import Authenticator
from creditwatch.server.api.errors import unary
from creditwatch.server.domain.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    OutOfRange,
    PreconditionViolation,
)
from creditwatch.server.domain.money import MAX_UNITS, Money, MoneyError
from creditwatch.server.domain.paging import (
    PageRequest,
    encode_token,
    page_request,
    tenant_fingerprints,
)
from creditwatch.server.domain.portfolio import (
    DEFAULT_LGD,
    SEGMENT_ACTION,
    ClassRow,
    Position,
    Segment,
    cents,
    segments_of,
    summary_of,
)
from creditwatch.server.domain.tenants import Caller
from creditwatch.server.scoring.registry import ModelRegistry
from creditwatch.server.store import portfolio as store
from creditwatch.server.store.portfolio import SegmentMark
from creditwatch.server.store.watchlists import WatchListStore
from creditwatch.v1 import alerts_pb2, common_pb2, portfolio_pb2, portfolio_pb2_grpc

MAX_TREND_DAYS = 731
_NANO_DIGITS = 9  # google.type.Money's precision


_MAX_UNITS = 2**63 - 1  # google.type.Money.units is an int64


def _money(value: Decimal, currency: str) -> Any:
    """A total as google.type.Money; OUT_OF_RANGE past what its int64 units
    carry (entries are capped one by one, not their sum: 10,000 entries of
    nearly 10^15 each pass 9.2 x 10^18), not INTERNAL."""
    if abs(value) > _MAX_UNITS:
        raise OutOfRange(
            f"an amount of this view ({value:.0f} {currency}) exceeds what google.type.Money "
            "carries (int64 units); look at smaller segments or fewer entries"
        )
    return cv.money_message(Money(currency, cents(value)))


def _date(value: date_pb2.Date, field: str, problems: list[FieldViolation]) -> dt.date | None:
    try:
        return dt.date(value.year, value.month, value.day)
    except ValueError:
        problems.append(FieldViolation(field, "must be a complete calendar date"))
        return None


def _date_message(value: dt.date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def _no_snapshot(field: str, day: dt.date) -> FailedPrecondition:
    return FailedPrecondition(
        f"no portfolio snapshot for {day}",
        [
            PreconditionViolation(
                "NO_SNAPSHOT",
                field,
                "snapshots are taken daily at 00:00 UTC from the day a watch list exists",
            )
        ],
    )


def _currency(value: str, problems: list[FieldViolation]) -> str:
    if not (len(value) == 3 and value.isascii() and value.isalpha() and value.isupper()):
        problems.append(
            FieldViolation("reporting_currency", "required: a 3-letter ISO 4217 code such as NOK")
        )
    return value


def _lgd(request: Any, problems: list[FieldViolation]) -> float:
    if not request.HasField("loss_given_default"):
        return DEFAULT_LGD
    if not 0 <= request.loss_given_default <= 1:
        problems.append(FieldViolation("loss_given_default", "0..1"))
    return float(request.loss_given_default)


def _class_rows(rows: list[ClassRow], currency: str) -> list[portfolio_pb2.ClassBreakdown]:
    return [
        portfolio_pb2.ClassBreakdown(
            risk_class=common_pb2.RiskClass.ValueType(row.risk_class),
            entry_count=row.entry_count,
            exposure=_money(row.exposure, currency),
            exposure_share=row.exposure_share,
            expected_loss=_money(row.expected_loss, currency),
        )
        for row in rows
    ]


def _entry(
    watch_list: str,
    position: Position,
    currency: str,
    loss: Decimal,
    share: float,
) -> portfolio_pb2.PortfolioEntry:
    return portfolio_pb2.PortfolioEntry(
        watch_list_entry=f"{watch_list}/entries/{position.company.key}",
        company=cv.company_ref(position.company),
        company_legal_name=position.legal_name,
        external_reference=position.external_reference,
        exposure=_money(position.amount, currency),
        probability_of_default=position.pd or 0.0,
        risk_class=common_pb2.RiskClass.ValueType(position.risk_class or 0),
        expected_loss=_money(loss, currency),
        expected_loss_share=share,
    )


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except ArithmeticError:
        return Decimal("NaN")


def _segment_key(page: PageRequest) -> tuple[SegmentMark | None, int, float, Decimal]:
    """A ListSegmentEntries token's (last entry shown, offset, PD split,
    exposure split), checked: a forged token must not reach the query with
    values no request can give. Tokens of earlier releases hold an offset in
    place of the last entry."""
    mark: SegmentMark | None = None
    if page.after is not None and len(page.after) == 3:
        offset, pd_split, split_text = page.key(int, float, str) or ()
    else:
        pd_split, split_text, loss_text, number, country = page.key(float, str, str, str, str) or ()
        offset, loss = 0, _decimal(loss_text)
        if (
            loss.is_finite()
            and loss >= 0
            # An expected loss is below 10^16 with at most a few hundred
            # decimals (PD and LGD as exact decimals of doubles); beyond that
            # PostgreSQL's numeric refuses it or asyncpg rounds it to 0.
            and (loss == 0 or -400 <= loss.adjusted() <= 20)
            and int(loss.as_tuple().exponent) >= -800
            and len(number) <= 16
            and len(country) == 2
        ):
            mark = SegmentMark(loss, number, country)
    split = _decimal(split_text)
    if not (
        (mark is not None or offset > 0)
        and offset >= 0
        and 0 <= pd_split <= 1
        and split.is_finite()
        and 0 <= split < MAX_UNITS
        and int(split.as_tuple().exponent) >= -_NANO_DIGITS
    ):
        raise InvalidArgument.single(
            "page_token", "not a token this server issued; start again with an empty token"
        )
    return mark, offset, pd_split, split


class PortfolioServicer(portfolio_pb2_grpc.PortfolioServiceServicer):
    """gRPC face of the portfolio view."""

    def __init__(
        self,
        auth: Authenticator,
        sessions: Any,
        watch_lists: WatchListStore,
        registry: ModelRegistry,
    ) -> None:
        self._auth = auth
        self._sessions = sessions
        self._watch_lists = watch_lists
        self._registry = registry

    async def caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        """The calling tenant and its key's grants."""
        return await self._auth.caller(context)

    async def _watch_list(self, name: str, tenant: uuid.UUID) -> tuple[uuid.UUID, float]:
        """The watch list's id and PD threshold (NOT_FOUND for another tenant's)."""
        watch_list = cv.watch_list_id(name, "watch_list")
        found = await self._watch_lists.get(tenant, watch_list)
        return watch_list, found.spec.pd_threshold

    @unary
    async def GetPortfolioSummary(
        self, request: portfolio_pb2.GetPortfolioSummaryRequest, tenant: uuid.UUID
    ) -> portfolio_pb2.GetPortfolioSummaryResponse:
        problems: list[FieldViolation] = []
        currency = _currency(request.reporting_currency, problems)
        lgd = _lgd(request, problems)
        if not 0 <= request.top_contributor_count <= 100:
            problems.append(FieldViolation("top_contributor_count", "0..100"))
        since = None
        if request.HasField("since_date"):
            since = _date(request.since_date, "since_date", problems)
            if since is not None and since >= dt.datetime.now(dt.UTC).date():
                problems.append(FieldViolation("since_date", "must be before today"))
        if problems:
            raise InvalidArgument(problems)
        watch_list, _ = await self._watch_list(request.watch_list, tenant)
        async with self._sessions() as session:
            totals, top = await store.summary_totals(
                session, tenant, watch_list, currency, lgd, request.top_contributor_count or 10
            )
        summary = summary_of(totals, top)
        response = portfolio_pb2.GetPortfolioSummaryResponse(
            watch_list=request.watch_list,
            reporting_currency=currency,
            loss_given_default=lgd,
            entry_count=summary.entry_count,
            scored_entry_count=summary.scored_entry_count,
            excluded_entry_count=summary.excluded_entry_count,
            total_exposure=_money(summary.total_exposure, currency),
            expected_loss=_money(summary.expected_loss, currency),
            classes=_class_rows(summary.classes, currency),
            top_contributors=[
                _entry(request.watch_list, p, currency, loss, share)
                for p, loss, share in summary.top
            ],
        )
        response.compute_time.GetCurrentTime()
        if summary.exposure_weighted_pd is not None:
            response.exposure_weighted_pd = summary.exposure_weighted_pd
        if since is not None:
            async with self._sessions() as session:
                then = await store.day_totals(
                    session, tenant, watch_list, since, since, currency, lgd
                )
            if since not in then:
                raise _no_snapshot("since_date", since)
            response.since_date.CopyFrom(_date_message(since))
            earlier = summary_of(then[since], []).exposure_weighted_pd
            if earlier is not None:
                response.exposure_weighted_pd_at_since_date = earlier
        return response

    @unary
    async def GetMigrationMatrix(
        self, request: portfolio_pb2.GetMigrationMatrixRequest, tenant: uuid.UUID
    ) -> portfolio_pb2.GetMigrationMatrixResponse:
        problems: list[FieldViolation] = []
        currency = _currency(request.reporting_currency, problems)
        first = _date(request.from_date, "from_date", problems)
        last = _date(request.to_date, "to_date", problems)
        if first is not None and last is not None:
            if last <= first:
                problems.append(FieldViolation("to_date", "must be after from_date"))
            if last > dt.datetime.now(dt.UTC).date():
                problems.append(FieldViolation("to_date", "must not be in the future"))
        if problems or first is None or last is None:
            raise InvalidArgument(problems)
        watch_list, _ = await self._watch_list(request.watch_list, tenant)
        async with self._sessions() as session:
            found = await store.snapshot_days(session, tenant, watch_list, first, first)
            found |= await store.snapshot_days(session, tenant, watch_list, last, last)
            for day, field in ((first, "from_date"), (last, "to_date")):
                if day not in found:
                    raise _no_snapshot(field, day)
            cells, excluded = await store.migration_cells(
                session, tenant, watch_list, first, last, currency
            )
        return portfolio_pb2.GetMigrationMatrixResponse(
            reporting_currency=currency,
            cells=[
                portfolio_pb2.MigrationCell(
                    from_risk_class=common_pb2.RiskClass.ValueType(cell.from_class),
                    to_risk_class=common_pb2.RiskClass.ValueType(cell.to_class),
                    entry_count=cell.entries,
                    exposure=_money(cell.exposure, currency),
                )
                for cell in cells
            ],
            excluded_entry_count=excluded,
        )

    @unary
    async def GetRiskTrend(
        self, request: portfolio_pb2.GetRiskTrendRequest, tenant: uuid.UUID
    ) -> portfolio_pb2.GetRiskTrendResponse:
        problems: list[FieldViolation] = []
        currency = _currency(request.reporting_currency, problems)
        first = _date(request.start_date, "start_date", problems)
        last = _date(request.end_date, "end_date", problems)
        if first is not None and last is not None:
            if last < first:
                problems.append(FieldViolation("end_date", "must not be before start_date"))
            elif (last - first).days > MAX_TREND_DAYS:
                problems.append(FieldViolation("end_date", f"at most {MAX_TREND_DAYS} days"))
            if last > dt.datetime.now(dt.UTC).date():
                problems.append(FieldViolation("end_date", "must not be in the future"))
        if problems or first is None or last is None:
            raise InvalidArgument(problems)
        watch_list, _ = await self._watch_list(request.watch_list, tenant)
        async with self._sessions() as session:
            days = await store.day_totals(
                session, tenant, watch_list, first, last, currency, DEFAULT_LGD
            )
        if not days:
            raise _no_snapshot("start_date", first)
        points = []
        for day in sorted(days):
            summary = summary_of(days[day], [])
            point = portfolio_pb2.RiskTrendPoint(
                date=_date_message(day),
                total_exposure=_money(summary.total_exposure, currency),
                classes=_class_rows(summary.classes, currency),
                excluded_entry_count=summary.excluded_entry_count,
            )
            if summary.exposure_weighted_pd is not None:
                point.exposure_weighted_pd = summary.exposure_weighted_pd
            points.append(point)
        return portfolio_pb2.GetRiskTrendResponse(reporting_currency=currency, points=points)

    def _splits(
        self,
        given: portfolio_pb2.SegmentSplits,
        currency: str,
        threshold: float,
        problems: list[FieldViolation],
        field: str,
    ) -> tuple[float, Decimal | None]:
        """The PD split, and the exposure split if the request gives one (else
        None: the upper median of the scored exposures, found by the store)."""
        if given.HasField("pd_split"):
            pd_split = given.pd_split
            if not 0 <= pd_split <= 1:
                problems.append(FieldViolation(f"{field}.pd_split", "0..1"))
        elif threshold > 0:
            pd_split = threshold
        else:
            pd_split = self._registry.active.model.info.bands.b_below  # lowest PD of class C
        if given.HasField("exposure_split"):
            try:
                split = Money.from_parts(
                    given.exposure_split.currency_code,
                    given.exposure_split.units,
                    given.exposure_split.nanos,
                )
            except MoneyError as error:
                problems.append(
                    FieldViolation(f"{field}.exposure_split.{error.field}", error.description)
                )
                return pd_split, Decimal(0)
            if split.currency != currency:
                problems.append(
                    FieldViolation(
                        f"{field}.exposure_split.currency_code", "must be the reporting currency"
                    )
                )
            return pd_split, split.amount
        return pd_split, None

    def _splits_message(
        self, pd_split: float, exposure_split: Decimal, currency: str
    ) -> portfolio_pb2.SegmentSplits:
        return portfolio_pb2.SegmentSplits(
            pd_split=pd_split, exposure_split=cv.money_message(Money(currency, exposure_split))
        )

    @unary
    async def ListSegments(
        self, request: portfolio_pb2.ListSegmentsRequest, tenant: uuid.UUID
    ) -> portfolio_pb2.ListSegmentsResponse:
        problems: list[FieldViolation] = []
        currency = _currency(request.reporting_currency, problems)
        lgd = _lgd(request, problems)
        # The splits are checked before the watch list is looked up (a bad
        # split is INVALID_ARGUMENT whatever the list); the default PD split,
        # the list's threshold, comes with the list.
        self._splits(request.splits, currency, 0.0, problems, "splits")
        if problems:
            raise InvalidArgument(problems)
        watch_list, threshold = await self._watch_list(request.watch_list, tenant)
        pd_split, given_split = self._splits(request.splits, currency, threshold, [], "splits")
        async with self._sessions() as session:
            exposure_split, totals = await store.segment_totals(
                session, tenant, watch_list, currency, lgd, pd_split, given_split
            )
        rows, unscored, excluded = segments_of(totals)
        summaries = []
        for row in rows:
            summary = portfolio_pb2.SegmentSummary(
                segment=portfolio_pb2.Segment.ValueType(row.segment),
                suggested_action=alerts_pb2.SuggestedAction.ValueType(SEGMENT_ACTION[row.segment]),
                entry_count=row.entry_count,
                exposure=_money(row.exposure, currency),
                expected_loss=_money(row.expected_loss, currency),
            )
            if row.exposure_weighted_pd is not None:
                summary.exposure_weighted_pd = row.exposure_weighted_pd
            summaries.append(summary)
        return portfolio_pb2.ListSegmentsResponse(
            reporting_currency=currency,
            splits=self._splits_message(pd_split, exposure_split, currency),
            segments=summaries,
            unscored_entry_count=unscored,
            excluded_entry_count=excluded,
        )

    @unary
    async def ListSegmentEntries(
        self, request: portfolio_pb2.ListSegmentEntriesRequest, tenant: uuid.UUID
    ) -> portfolio_pb2.ListSegmentEntriesResponse:
        problems: list[FieldViolation] = []
        currency = _currency(request.reporting_currency, problems)
        lgd = _lgd(request, problems)
        if request.segment not in set(int(s) for s in Segment):
            problems.append(FieldViolation("segment", "required: one of the four segments"))
        self._splits(request.splits, currency, 0.0, problems, "splits")  # as in ListSegments
        digest, legacy = tenant_fingerprints(
            tenant,
            request.watch_list,
            currency,
            int(request.segment),
            lgd,
            request.splits.SerializeToString().hex(),
        )
        try:
            page = page_request(
                request.page_size,
                request.page_token,
                digest,
                default_size=1_000,
                max_size=10_000,
                legacy=legacy,
            )
        except InvalidArgument as error:  # told together with the rest
            problems.extend(error.violations)
        if problems:
            raise InvalidArgument(problems)
        watch_list, threshold = await self._watch_list(request.watch_list, tenant)
        given_split: Decimal | None
        after: SegmentMark | None = None
        offset = 0
        if page.after is None:
            pd_split, given_split = self._splits(request.splits, currency, threshold, [], "splits")
        else:
            # Later pages keep the first page's splits (the median may move).
            after, offset, pd_split, given_split = _segment_key(page)
        segment = Segment(request.segment)
        async with self._sessions() as session:
            found = await store.segment_entries(
                session,
                tenant,
                watch_list,
                currency,
                lgd,
                pd_split,
                given_split,
                segment,
                after,
                page.size,
                offset,
            )
        exposure_split = found.exposure_split
        token = ""
        if found.more:
            last, loss = found.entries[-1]
            token = encode_token(
                (
                    pd_split,
                    str(exposure_split),
                    str(loss),
                    last.company.register_number,
                    last.company.country,
                ),
                digest,
            )
        total_loss = found.total_loss
        return portfolio_pb2.ListSegmentEntriesResponse(
            entries=[
                _entry(
                    request.watch_list,
                    p,
                    currency,
                    loss,
                    float(loss / total_loss) if total_loss else 0.0,
                )
                for p, loss in found.entries
            ],
            next_page_token=token,
            splits=self._splits_message(pd_split, exposure_split, currency),
            suggested_action=alerts_pb2.SuggestedAction.ValueType(SEGMENT_ACTION[segment]),
        )
