"""Company events and the risk state they leave a company in."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime


class CompanyStatus(enum.IntEnum):
    """Register status; values match the wire enum CompanyStatus."""

    UNSPECIFIED = 0
    ACTIVE = 1
    VOLUNTARY_LIQUIDATION = 2
    COMPULSORY_DISSOLUTION = 3
    BANKRUPT = 4
    DELETED = 5


class EventType(enum.IntEnum):
    """Kinds of company events; values match the wire enum CompanyEventType."""

    BANKRUPTCY_PETITION_FILED = 1
    BANKRUPTCY_HEARING_SCHEDULED = 2
    BANKRUPTCY_OPENED = 3
    COMPULSORY_DISSOLUTION = 4
    VOLUNTARY_LIQUIDATION = 5
    PAYMENT_REMARK_REGISTERED = 6
    PAYMENT_REMARK_REMOVED = 7
    DEBT_COLLECTION_OPENED = 8
    DEBT_COLLECTION_CLOSED = 9
    RESPONSIBLE_PERSON_CHANGED = 10
    ADDRESS_CHANGED = 11
    DELETED_FROM_REGISTER = 12


@dataclass(frozen=True)
class CompanyEvent:
    """One fact about a company at a time. `reference` ties pairs together: the
    remark id of a payment remark, the case id of a collection case."""

    type: EventType
    occurred_at: datetime | None = None
    reference: str = ""
    recorded_at: datetime | None = field(default=None, compare=False)
    """When a stored event was recorded (its only time if it is undated);
    None for one not stored. Not part of what the event says."""


class _OpenItems:
    """Remarks or cases opened and closed by reference; an unreferenced close
    closes one unreferenced open item."""

    def __init__(self) -> None:
        self._referenced: set[str] = set()
        self._anonymous = 0

    def open(self, reference: str) -> None:
        if reference:
            self._referenced.add(reference)
        else:
            self._anonymous += 1

    def close(self, reference: str) -> None:
        if reference in self._referenced:
            self._referenced.discard(reference)
        elif self._anonymous:
            self._anonymous -= 1

    @property
    def count(self) -> int:
        return len(self._referenced) + self._anonymous


_CLOSING = frozenset({EventType.PAYMENT_REMARK_REMOVED, EventType.DEBT_COLLECTION_CLOSED})


@dataclass(frozen=True)
class RiskState:
    """What a company's events say about it, as scoring overrides need it."""

    bankruptcy_opened: bool = False
    compulsory_dissolution: bool = False
    open_payment_remarks: int = 0
    open_collection_cases: int = 0
    seriously_overdue_invoices: int = 0
    """Open invoices creditors report far past due (pooled over tenants; the
    threshold is the override policy's `overdue_days`)."""
    overdue_creditors: int = 0
    """How many creditors (tenants) report those invoices: the override policy
    counts them only when enough do (`overdue_min_creditors`)."""

    @classmethod
    def of(cls, events: Iterable[CompanyEvent]) -> RiskState:
        """Replay events in time order (undated ones last, as they arrived).
        At the same time (a day's events are dated at midnight) an opening
        comes before a closing: a remark is not removed before it exists,
        whichever order the events were stored in."""
        ordered = sorted(
            enumerate(events),
            key=lambda pair: (
                pair[1].occurred_at is None,
                pair[1].occurred_at or 0,
                pair[1].type in _CLOSING,
                pair[0],
            ),
        )
        bankrupt = dissolved = False
        remarks, cases = _OpenItems(), _OpenItems()
        for _, event in ordered:
            match event.type:
                case EventType.BANKRUPTCY_OPENED:
                    bankrupt = True
                case EventType.COMPULSORY_DISSOLUTION:
                    dissolved = True
                case EventType.PAYMENT_REMARK_REGISTERED:
                    remarks.open(event.reference)
                case EventType.PAYMENT_REMARK_REMOVED:
                    remarks.close(event.reference)
                case EventType.DEBT_COLLECTION_OPENED:
                    cases.open(event.reference)
                case EventType.DEBT_COLLECTION_CLOSED:
                    cases.close(event.reference)
                case _:
                    pass
        return cls(
            bankruptcy_opened=bankrupt,
            compulsory_dissolution=dissolved,
            open_payment_remarks=remarks.count,
            open_collection_cases=cases.count,
        )


# The register status an event leaves a company in.
STATUS_AFTER: dict[EventType, CompanyStatus] = {
    EventType.BANKRUPTCY_OPENED: CompanyStatus.BANKRUPT,
    EventType.COMPULSORY_DISSOLUTION: CompanyStatus.COMPULSORY_DISSOLUTION,
    EventType.VOLUNTARY_LIQUIDATION: CompanyStatus.VOLUNTARY_LIQUIDATION,
    EventType.DELETED_FROM_REGISTER: CompanyStatus.DELETED,
}

# The event a register status is handled like, when it is set without one
# (UpsertCompany): BANKRUPT like a bankruptcy-opened event dated then.
EVENT_OF_STATUS: dict[CompanyStatus, EventType] = {
    status: event for event, status in STATUS_AFTER.items()
}


def risk_state(
    events: Iterable[CompanyEvent],
    status: int,
    overdue_invoices: int,
    status_time: datetime | None = None,
    overdue_creditors: int = 0,
) -> RiskState:
    """A company's risk state from its events, its register status (a status of
    BANKRUPT or COMPULSORY_DISSOLUTION counts like the event) and the pooled
    count of seriously overdue invoices (and of the creditors reporting them).

    The register has the last word on a bankruptcy or a compulsory
    dissolution: the status ACTIVE, set on a later day (`status_time`) than
    every event of the kind, ends it. A compulsory dissolution halted once the
    accounts are filed, or an annulled bankruptcy, which the register feed
    reports as the unit's flags cleared (status ACTIVE), no longer holds the
    company in class D. Only ACTIVE does: a milder risk status comes from
    another risk event (a voluntary liquidation dated after the bankruptcy, of
    a unit flagged with both), not from the register clearing the flag. On
    the day of the event itself the event stands, as the graver status does
    in the intake."""
    events = list(events)
    state = RiskState.of(events)
    status_day = _day(status_time) if status_time is not None else None

    def holds(kind: EventType, by_events: bool) -> bool:
        grade = STATUS_AFTER[kind]
        if status == grade:
            return True
        if not by_events:
            return False
        if status_day is None or status != CompanyStatus.ACTIVE:
            return True
        days = [_day(e.occurred_at or e.recorded_at) for e in events if e.type == kind]
        return not all(day is not None and day < status_day for day in days)

    return RiskState(
        bankruptcy_opened=holds(EventType.BANKRUPTCY_OPENED, state.bankruptcy_opened),
        compulsory_dissolution=holds(
            EventType.COMPULSORY_DISSOLUTION, state.compulsory_dissolution
        ),
        open_payment_remarks=state.open_payment_remarks,
        open_collection_cases=state.open_collection_cases,
        seriously_overdue_invoices=overdue_invoices,
        overdue_creditors=overdue_creditors,
    )


def _day(at: datetime | None) -> date | None:
    """The UTC day of a time (registers date events by day)."""
    return at.astimezone(UTC).date() if at is not None else None
