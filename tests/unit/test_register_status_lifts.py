"""The register's later status ends a bankruptcy or compulsory dissolution (risk_state)."""

from __future__ import annotations

from datetime import UTC, datetime

from creditwatch.server.domain.events import CompanyEvent, CompanyStatus, EventType, risk_state

OPENED = EventType.BANKRUPTCY_OPENED
DISSOLVED = EventType.COMPULSORY_DISSOLUTION
MAY_1 = datetime(2026, 5, 1, tzinfo=UTC)
MAY_1_EVENING = datetime(2026, 5, 1, 21, 30, tzinfo=UTC)
JUNE_1 = datetime(2026, 6, 1, tzinfo=UTC)


def test_a_later_active_status_ends_a_bankruptcy() -> None:
    state = risk_state([CompanyEvent(OPENED, MAY_1)], CompanyStatus.ACTIVE, 0, JUNE_1)
    assert not state.bankruptcy_opened


def test_without_a_status_time_the_event_stands() -> None:
    """Companies whose status predates migration 0017 have no status time."""
    state = risk_state([CompanyEvent(OPENED, MAY_1)], CompanyStatus.ACTIVE, 0, None)
    assert state.bankruptcy_opened


def test_on_the_day_of_the_event_the_event_stands() -> None:
    state = risk_state([CompanyEvent(OPENED, MAY_1)], CompanyStatus.ACTIVE, 0, MAY_1_EVENING)
    assert state.bankruptcy_opened


def test_a_graver_status_does_not_end_it() -> None:
    state = risk_state([CompanyEvent(OPENED, MAY_1)], CompanyStatus.DELETED, 0, JUNE_1)
    assert state.bankruptcy_opened


def test_every_event_of_the_kind_must_be_older() -> None:
    events = [CompanyEvent(OPENED, MAY_1), CompanyEvent(OPENED, datetime(2026, 7, 1, tzinfo=UTC))]
    assert risk_state(events, CompanyStatus.ACTIVE, 0, JUNE_1).bankruptcy_opened


def test_only_active_ends_them_not_a_milder_risk_status() -> None:
    """A unit flagged bankrupt and, later, in voluntary liquidation (the
    intake sets the later event's status) is still bankrupt."""
    liquidating = risk_state(
        [CompanyEvent(OPENED, MAY_1)], CompanyStatus.VOLUNTARY_LIQUIDATION, 0, JUNE_1
    )
    assert liquidating.bankruptcy_opened
    events = [CompanyEvent(DISSOLVED, MAY_1)]
    assert risk_state(events, CompanyStatus.VOLUNTARY_LIQUIDATION, 0, JUNE_1).compulsory_dissolution
    assert not risk_state(events, CompanyStatus.ACTIVE, 0, JUNE_1).compulsory_dissolution
    bankrupt = risk_state(events, CompanyStatus.BANKRUPT, 0, JUNE_1)
    assert bankrupt.compulsory_dissolution  # a graver status: the dissolution stands
    assert bankrupt.bankruptcy_opened  # and the status counts like the event


def test_an_undated_event_is_dated_by_its_recording() -> None:
    recorded_may = CompanyEvent(OPENED, None, recorded_at=MAY_1)
    assert not risk_state([recorded_may], CompanyStatus.ACTIVE, 0, JUNE_1).bankruptcy_opened
    recorded_june = CompanyEvent(OPENED, None, recorded_at=JUNE_1)
    assert risk_state([recorded_june], CompanyStatus.ACTIVE, 0, JUNE_1).bankruptcy_opened
    unknown = CompanyEvent(OPENED, None)
    assert risk_state([unknown], CompanyStatus.ACTIVE, 0, JUNE_1).bankruptcy_opened


def test_the_recording_time_is_not_part_of_the_event() -> None:
    """A stored event equals the same event sent again (conflict checks compare them)."""
    assert CompanyEvent(OPENED, MAY_1, "x", recorded_at=JUNE_1) == CompanyEvent(OPENED, MAY_1, "x")


def test_remarks_and_cases_are_not_touched_by_the_status() -> None:
    events = [
        CompanyEvent(EventType.PAYMENT_REMARK_REGISTERED, MAY_1, "r1"),
        CompanyEvent(EventType.DEBT_COLLECTION_OPENED, MAY_1, "c1"),
    ]
    state = risk_state(events, CompanyStatus.ACTIVE, 3, JUNE_1)
    assert (state.open_payment_remarks, state.open_collection_cases) == (1, 1)
    assert state.seriously_overdue_invoices == 3
