"""Which new events repeat news the watchers heard (intake._told)."""

from __future__ import annotations

from datetime import UTC, datetime

from creditwatch.server.domain.events import CompanyEvent, CompanyStatus, EventType
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.intake import IncomingEvent, _told

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
