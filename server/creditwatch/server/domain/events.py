"""Company events and the risk state they leave a company in."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


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


def risk_state(events: Iterable[CompanyEvent], status: int, overdue_invoices: int) -> RiskState:
    """A company's risk state from its events, its register status (a status of
    BANKRUPT or COMPULSORY_DISSOLUTION counts like the event) and the pooled
    count of seriously overdue invoices."""
    state = RiskState.of(events)
    return RiskState(
        bankruptcy_opened=state.bankruptcy_opened or status == CompanyStatus.BANKRUPT,
        compulsory_dissolution=state.compulsory_dissolution
        or status == CompanyStatus.COMPULSORY_DISSOLUTION,
        open_payment_remarks=state.open_payment_remarks,
        open_collection_cases=state.open_collection_cases,
        seriously_overdue_invoices=overdue_invoices,
    )
