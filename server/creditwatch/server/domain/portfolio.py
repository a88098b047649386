"""Portfolio arithmetic: which companies drive a watch list's risk.

Pure and exact: amounts are Decimal, expected loss = PD x LGD x exposure with
the PD taken as its shortest decimal representation, and figures are rounded
half-even to 2 decimals only when reported. Entries whose exposure is in
another currency than the reporting one are excluded from everything and
counted; an entry without exposure counts with exposure 0.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from creditwatch.server.domain.alerts import SuggestedAction
from creditwatch.server.domain.identifiers import CompanyId

DEFAULT_LGD = 0.45
CENT = Decimal("0.01")
CLASSES = (1, 2, 3, 4, 0)
"""Report order: A, B, C, D, then unscored."""


def cents(value: Decimal) -> Decimal:
    """Rounded half-even to 2 decimals (only when reporting)."""
    return value.quantize(CENT, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Position:
    """One watch list entry with its exposure and current score."""

    company: CompanyId
    legal_name: str
    external_reference: str
    exposure_currency: str | None
    exposure: Decimal | None
    pd: float | None
    risk_class: int | None

    def counted_in(self, currency: str) -> bool:
        """Whether the entry counts in figures reported in `currency`."""
        return self.exposure_currency is None or self.exposure_currency == currency

    @property
    def amount(self) -> Decimal:
        """Exposure, 0 when none."""
        return self.exposure if self.exposure is not None else Decimal(0)

    @property
    def scored(self) -> bool:
        """Whether the company has a score."""
        return self.pd is not None

    def expected_loss(self, lgd: Decimal) -> Decimal:
        """PD x LGD x exposure (0 unscored)."""
        if self.pd is None:
            return Decimal(0)
        return Decimal(repr(self.pd)) * lgd * self.amount


@dataclass
class ClassRow:
    """Figures of one risk class (0 = unscored)."""

    risk_class: int
    entry_count: int = 0
    exposure: Decimal = Decimal(0)
    expected_loss: Decimal = Decimal(0)
    exposure_share: float = 0.0


@dataclass
class Summary:
    """A watch list's risk figures in one currency."""

    entry_count: int
    scored_entry_count: int
    excluded_entry_count: int
    total_exposure: Decimal
    expected_loss: Decimal
    classes: list[ClassRow]
    top: list[tuple[Position, Decimal, float]]
    """(entry, expected loss, share of total expected loss), largest first."""
    exposure_weighted_pd: float | None


def weighted_pd(positions: Iterable[Position]) -> float | None:
    """sum(PD x exposure) / sum(exposure) over scored entries; None when that sum is 0."""
    numerator = Decimal(0)
    denominator = Decimal(0)
    for p in positions:
        if p.pd is None:
            continue
        numerator += Decimal(repr(p.pd)) * p.amount
        denominator += p.amount
    return float(numerator / denominator) if denominator else None


def summarize(positions: Sequence[Position], currency: str, lgd: float, top_n: int) -> Summary:
    """The summary of a watch list's entries: the reference arithmetic. The
    service has PostgreSQL add up the same figures (store.portfolio's
    summary_totals and day_totals, then `summary_of`); tests hold the two
    equal."""
    lgd_d = Decimal(repr(lgd))
    counted = [p for p in positions if p.counted_in(currency)]
    rows = {c: ClassRow(c) for c in CLASSES}
    losses: list[tuple[Position, Decimal]] = []
    total_exposure = Decimal(0)
    total_loss = Decimal(0)
    for p in counted:
        row = rows[p.risk_class if p.scored and p.risk_class else 0]
        loss = p.expected_loss(lgd_d)
        row.entry_count += 1
        row.exposure += p.amount
        row.expected_loss += loss
        total_exposure += p.amount
        total_loss += loss
        if p.scored:
            losses.append((p, loss))
    for row in rows.values():
        row.exposure_share = float(row.exposure / total_exposure) if total_exposure else 0.0
    losses.sort(
        key=lambda pair: (-pair[1], pair[0].company.register_number, pair[0].company.country)
    )
    top = [(p, loss, float(loss / total_loss) if total_loss else 0.0) for p, loss in losses[:top_n]]
    return Summary(
        entry_count=len(counted),
        scored_entry_count=sum(1 for p in counted if p.scored),
        excluded_entry_count=len(positions) - len(counted),
        total_exposure=total_exposure,
        expected_loss=total_loss,
        classes=[rows[c] for c in CLASSES],
        top=top,
        exposure_weighted_pd=weighted_pd(counted),
    )


@dataclass(frozen=True)
class ClassTotals:
    """Sums over the entries of one risk class (0 = unscored) that count or
    don't count in the reporting currency: what `summary_of` needs of a book
    when the database adds it up."""

    risk_class: int
    counted: bool
    entries: int
    scored: int
    exposure: Decimal
    expected_loss: Decimal
    pd_exposure: Decimal
    """sum(PD x exposure) over the scored entries."""
    scored_exposure: Decimal


def summary_of(totals: Sequence[ClassTotals], top: Sequence[tuple[Position, Decimal]]) -> Summary:
    """The summary that `summarize` makes of the entries behind `totals`,
    from the sums alone; `top` is the largest expected losses, in order."""
    rows = {c: ClassRow(c) for c in CLASSES}
    counted = [t for t in totals if t.counted]
    for t in counted:
        row = rows[t.risk_class]
        row.entry_count += t.entries
        row.exposure += t.exposure
        row.expected_loss += t.expected_loss
    total_exposure = sum((t.exposure for t in counted), Decimal(0))
    total_loss = sum((t.expected_loss for t in counted), Decimal(0))
    for row in rows.values():
        row.exposure_share = float(row.exposure / total_exposure) if total_exposure else 0.0
    numerator = sum((t.pd_exposure for t in counted), Decimal(0))
    denominator = sum((t.scored_exposure for t in counted), Decimal(0))
    return Summary(
        entry_count=sum(t.entries for t in counted),
        scored_entry_count=sum(t.scored for t in counted),
        excluded_entry_count=sum(t.entries for t in totals if not t.counted),
        total_exposure=total_exposure,
        expected_loss=total_loss,
        classes=[rows[c] for c in CLASSES],
        top=[(p, loss, float(loss / total_loss) if total_loss else 0.0) for p, loss in top],
        exposure_weighted_pd=float(numerator / denominator) if denominator else None,
    )


@dataclass(frozen=True)
class MigrationCell:
    """Entries that moved from one risk class to another between two days (0 =
    unscored or not in that day's snapshot), with their exposure on the later
    day (the earlier one's if the entry is gone)."""

    from_class: int
    to_class: int
    entries: int
    exposure: Decimal


def migration(
    before: Sequence[Position], after: Sequence[Position], currency: str
) -> tuple[list[MigrationCell], int]:
    """The class migration between two snapshots, in (from, to) order, and how
    many entries were left out for an exposure in another currency on either
    day: the reference arithmetic (the service has PostgreSQL add it up,
    store.portfolio.migration_cells; tests hold the two equal)."""
    old_by = {p.company: p for p in before}
    new_by = {p.company: p for p in after}
    cells: dict[tuple[int, int], tuple[int, Decimal]] = {}
    excluded = 0
    for company in old_by.keys() | new_by.keys():
        old, new = old_by.get(company), new_by.get(company)
        if (old is not None and not old.counted_in(currency)) or (
            new is not None and not new.counted_in(currency)
        ):
            excluded += 1
            continue
        key = (
            (old.risk_class or 0) if old is not None and old.scored else 0,
            (new.risk_class or 0) if new is not None and new.scored else 0,
        )
        exposure = new.amount if new is not None else old.amount if old is not None else Decimal(0)
        count, total = cells.get(key, (0, Decimal(0)))
        cells[key] = (count + 1, total + exposure)
    return [MigrationCell(a, b, n, x) for (a, b), (n, x) in sorted(cells.items())], excluded


class Segment(enum.IntEnum):
    """Wire enum Segment."""

    HIGH_RISK_HIGH_EXPOSURE = 1
    HIGH_RISK_LOW_EXPOSURE = 2
    LOW_RISK_HIGH_EXPOSURE = 3
    LOW_RISK_LOW_EXPOSURE = 4


SEGMENT_ACTION = {
    Segment.HIGH_RISK_HIGH_EXPOSURE: SuggestedAction.REDUCE_LIMIT,
    Segment.HIGH_RISK_LOW_EXPOSURE: SuggestedAction.REQUIRE_PREPAYMENT,
    Segment.LOW_RISK_HIGH_EXPOSURE: SuggestedAction.MONITOR,
    Segment.LOW_RISK_LOW_EXPOSURE: SuggestedAction.ROOM_TO_GROW,
}


def upper_median(values: Sequence[Decimal]) -> Decimal:
    """The median; for an even count the upper of the two middle values."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else Decimal(0)


def segment_of(position: Position, pd_split: float, exposure_split: Decimal) -> Segment:
    """The quadrant of a scored entry."""
    assert position.pd is not None
    return quadrant(position.pd >= pd_split, position.amount >= exposure_split)


def quadrant(high_risk: bool, high_exposure: bool) -> Segment:
    """The segment of an entry on either side of the two splits."""
    if high_risk:
        return Segment.HIGH_RISK_HIGH_EXPOSURE if high_exposure else Segment.HIGH_RISK_LOW_EXPOSURE
    return Segment.LOW_RISK_HIGH_EXPOSURE if high_exposure else Segment.LOW_RISK_LOW_EXPOSURE


def sides(segment: Segment) -> tuple[bool, bool]:
    """(high risk, high exposure) of a segment: `quadrant` reversed."""
    return segment in (
        Segment.HIGH_RISK_HIGH_EXPOSURE,
        Segment.HIGH_RISK_LOW_EXPOSURE,
    ), segment in (
        Segment.HIGH_RISK_HIGH_EXPOSURE,
        Segment.LOW_RISK_HIGH_EXPOSURE,
    )


@dataclass
class SegmentRow:
    """Totals of one segment."""

    segment: Segment
    entries: list[Position] = field(default_factory=list)
    exposure: Decimal = Decimal(0)
    expected_loss: Decimal = Decimal(0)
    exposure_weighted_pd: float | None = None


def segments(
    positions: Sequence[Position],
    currency: str,
    lgd: float,
    pd_split: float,
    exposure_split: Decimal,
) -> tuple[list[SegmentRow], int, int]:
    """(the four segments in enum order, unscored count, excluded count): the
    reference arithmetic (the service has PostgreSQL add it up,
    store.portfolio.segment_totals and `segments_of`; tests hold the two
    equal)."""
    lgd_d = Decimal(repr(lgd))
    counted = [p for p in positions if p.counted_in(currency)]
    rows = {s: SegmentRow(s) for s in Segment}
    for p in counted:
        if not p.scored:
            continue
        row = rows[segment_of(p, pd_split, exposure_split)]
        row.entries.append(p)
        row.exposure += p.amount
        row.expected_loss += p.expected_loss(lgd_d)
    for row in rows.values():
        row.exposure_weighted_pd = weighted_pd(row.entries)
    unscored = sum(1 for p in counted if not p.scored)
    return [rows[s] for s in Segment], unscored, len(positions) - len(counted)


@dataclass(frozen=True)
class SegmentTotals:
    """Sums over a watch list's entries on one side of each split, by whether
    they count in the reporting currency and are scored: what `segments_of`
    needs when the database adds them up."""

    counted: bool
    scored: bool
    high_risk: bool
    high_exposure: bool
    entries: int
    exposure: Decimal
    expected_loss: Decimal
    pd_exposure: Decimal
    """sum(PD x exposure)."""


@dataclass(frozen=True)
class SegmentFigures:
    """One segment's figures, as `segments` gives them but for the entries."""

    segment: Segment
    entry_count: int
    exposure: Decimal
    expected_loss: Decimal
    exposure_weighted_pd: float | None


def segments_of(totals: Sequence[SegmentTotals]) -> tuple[list[SegmentFigures], int, int]:
    """`segments`' figures from the sums alone: (the four segments in enum
    order, unscored count, excluded count)."""
    sums: dict[Segment, list[Any]] = {s: [0, Decimal(0), Decimal(0), Decimal(0)] for s in Segment}
    for t in totals:
        if not (t.counted and t.scored):
            continue
        row = sums[quadrant(t.high_risk, t.high_exposure)]
        row[0] += t.entries
        row[1] += t.exposure
        row[2] += t.expected_loss
        row[3] += t.pd_exposure
    figures = [
        SegmentFigures(
            segment,
            count,
            exposure,
            loss,
            float(pd_exposure / exposure) if exposure else None,
        )
        for segment, (count, exposure, loss, pd_exposure) in sums.items()
    ]
    unscored = sum(t.entries for t in totals if t.counted and not t.scored)
    excluded = sum(t.entries for t in totals if not t.counted)
    return figures, unscored, excluded
