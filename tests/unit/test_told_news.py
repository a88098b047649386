"""Which new events repeat news the watchers heard (intake._told)."""

from __future__ import annotations

from datetime import UTC, datetime

from creditwatch.server.domain.events import CompanyEvent, CompanyStatus, EventType
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.intake import IncomingEvent, _master_after, _told

COMPANY = CompanyId("NO", "923609016")
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
OPENED = EventType.BANKRUPTCY_OPENED


def _event(event_id: str, when: datetime | None, kind: EventType = OPENED) -> IncomingEvent:
    return IncomingEvent(COMPANY, event_id, CompanyEvent(kind, when), {}, "test", 0, "x")


def test_repeats_are_told_at_the_latest_telling_and_later_or_other_news_is_not() -> None:
    may, june = datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    recorded = datetime(2026, 5, 2, 9, tzinfo=UTC)
    stored = {(COMPANY, OPENED): [(may, recorded)]}
    status = (int(CompanyStatus.BANKRUPT), datetime(2026, 5, 3, tzinfo=UTC))
    told = _told(
        COMPANY,
        [  # in time order, undated last, as the intake sorts them
            _event("copy", may),  # same day as the stored one and the status
            _event("remark", may, EventType.PAYMENT_REMARK_REGISTERED),
            _event("later", june),  # dated later, while still bankrupt: the same one
            _event("undated", None),  # no date: taken for what was told
        ],
        stored,
        status,
        NOW,
    )
    assert [(e.event_id, at) for e, at in told] == [
        ("copy", datetime(2026, 5, 3, tzinfo=UTC)),
        ("remark", None),
        ("later", NOW),  # told by the copy in this call
        ("undated", NOW),
    ]
    # Set back (an annulment): a later bankruptcy is news, and its copy in
    # the call, dated later still, is told by it.
    active = (int(CompanyStatus.ACTIVE), datetime(2026, 5, 20, tzinfo=UTC))
    july = datetime(2026, 7, 1, tzinfo=UTC)
    told = _told(
        COMPANY,
        [_event("again", june), _event("again-copy", july)],
        stored,
        active,
        NOW,
    )
    assert [(e.event_id, at) for e, at in told] == [("again", None), ("again-copy", NOW)]
    # An earlier-dated copy after the annulment repeats the stored one.
    (old,) = _told(COMPANY, [_event("old-copy", may)], stored, active, NOW)
    assert old[1] == recorded
    # An undated one alone repeats the stored news, told when it was recorded.
    (alone,) = _told(COMPANY, [_event("undated", None)], stored, (0, None), NOW)
    assert alone[1] == recorded


def test_nothing_told_before_means_news() -> None:
    told = _told(COMPANY, [_event("first", None)], {}, (int(CompanyStatus.ACTIVE), NOW), NOW)
    assert [at for _, at in told] == [None]


def test_a_dissolution_dated_by_another_ground_while_dissolving_is_the_same_one() -> None:
    dissolution = EventType.COMPULSORY_DISSOLUTION
    march, august = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 8, 1, tzinfo=UTC)
    recorded = datetime(2026, 3, 2, tzinfo=UTC)
    stored = {(COMPANY, dissolution): [(march, recorded)]}
    dissolving = (int(CompanyStatus.COMPULSORY_DISSOLUTION), march)
    (same,) = _told(COMPANY, [_event("ground-2", august, dissolution)], stored, dissolving, NOW)
    assert same[1] == recorded
    # Bankrupt since: a dissolution dated after it is news.
    bankrupt = (int(CompanyStatus.BANKRUPT), datetime(2026, 6, 1, tzinfo=UTC))
    (news,) = _told(COMPANY, [_event("ground-2", august, dissolution)], stored, bankrupt, NOW)
    assert news[1] is None


def test_the_status_moves_on_only_with_events_that_set_it() -> None:
    may, june = datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
    recorded = datetime(2026, 5, 2, tzinfo=UTC)
    stored = {(COMPANY, OPENED): [(may, recorded)]}
    annulled = (int(CompanyStatus.ACTIVE), datetime(2026, 5, 20, tzinfo=UTC))
    # A copy of the annulled bankruptcy sets nothing back, so the new one in
    # the same call is news to every watcher.
    told = _told(COMPANY, [_event("copy", may), _event("new", june)], stored, annulled, NOW)
    assert [(e.event_id, at) for e, at in told] == [("copy", recorded), ("new", None)]
    master, _ = _master_after(COMPANY, [_event("copy", may)], stored, annulled)
    assert master == {}
    # A bankruptcy reported late, never heard of: graver than the ACTIVE, it
    # sets the status, and its copy dated after it is the same bankruptcy.
    late, copy = datetime(2026, 5, 10, tzinfo=UTC), datetime(2026, 5, 12, tzinfo=UTC)
    told = _told(COMPANY, [_event("late", late), _event("copy", copy)], {}, annulled, NOW)
    assert [(e.event_id, at) for e, at in told] == [("late", None), ("copy", NOW)]
    master, at = _master_after(COMPANY, [_event("late", late)], {}, annulled)
    assert (master, at) == ({"status": int(CompanyStatus.BANKRUPT)}, late)
    # Under dissolution since March: a liquidation of 2019 reported late sets
    # nothing (not graver), so the dissolution's next ground is still a repeat.
    dissolution, liquidation = EventType.COMPULSORY_DISSOLUTION, EventType.VOLUNTARY_LIQUIDATION
    march = datetime(2026, 3, 1, tzinfo=UTC)
    dissolved = {(COMPANY, dissolution): [(march, datetime(2026, 3, 2, tzinfo=UTC))]}
    dissolving = (int(CompanyStatus.COMPULSORY_DISSOLUTION), march)
    told = _told(
        COMPANY,
        [
            _event("2019", datetime(2019, 4, 1, tzinfo=UTC), liquidation),
            _event("ground", datetime(2026, 8, 1, tzinfo=UTC), dissolution),
        ],
        dissolved,
        dissolving,
        NOW,
    )
    assert [(e.event_id, at) for e, at in told] == [
        ("2019", None),
        ("ground", datetime(2026, 3, 2, tzinfo=UTC)),
    ]
