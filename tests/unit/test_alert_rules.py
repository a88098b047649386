"""Alert rules, priorities and cursors: pure logic, checked case by case."""

from __future__ import annotations

import base64
import dataclasses
import struct
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from creditwatch.server.domain import cursors
from creditwatch.server.domain.alerts import (
    AlertType,
    Change,
    EventFact,
    RescoreFact,
    RescoreReason,
    Severity,
    StatementFact,
    SuggestedAction,
    Watcher,
    plan,
)
from creditwatch.server.domain.errors import FailedPrecondition, InvalidArgument
from creditwatch.server.domain.events import CompanyEvent, EventType
from creditwatch.server.domain.scores import RiskClass, StoredScore
from creditwatch.server.domain.watchlists import AlertRules
from tests.e2e.alerting import legacy_cursor

NOW = datetime(2026, 11, 24, tzinfo=UTC)
ANY_ALERT = AlertRules()


def score(risk_class: RiskClass, pd: float) -> StoredScore:
    return StoredScore(pd, risk_class, risk_class, (), "m1", None, NOW)


def watcher(
    rules: AlertRules = ANY_ALERT, threshold: float = 0.0, exposure: int | None = 100
) -> Watcher:
    return Watcher(
        tenant_id=uuid.uuid4(),
        watch_list_id=uuid.uuid4(),
        rules=rules,
        pd_threshold=threshold,
        exposure_currency="NOK" if exposure is not None else None,
        exposure_amount=Decimal(exposure) if exposure is not None else None,
    )


def event(kind: EventType) -> EventFact:
    return EventFact("e1", CompanyEvent(kind, NOW), "x", {}, "test")


def test_bankruptcy_raises_the_event_and_the_class_change() -> None:
    change = Change(
        event(EventType.BANKRUPTCY_OPENED), score(RiskClass.B, 0.02), score(RiskClass.D, 0.02), NOW
    )
    planned = plan(change, [watcher(exposure=1_000)])
    assert [(p.type, p.severity, p.suggested_action, p.priority) for p in planned] == [
        (AlertType.BANKRUPTCY_OPENED, Severity.CRITICAL, SuggestedAction.STOP_CREDIT, 16_000.0),
        (
            AlertType.RISK_CLASS_DOWNGRADE,
            Severity.HIGH,
            SuggestedAction.REQUIRE_PREPAYMENT,
            8_000.0,
        ),
    ]
    assert planned[0].summary == "Bankruptcy opened; risk class B → D"


@pytest.mark.parametrize(
    ("before", "after", "kind", "severity", "steps"),
    [
        (RiskClass.A, RiskClass.B, AlertType.RISK_CLASS_DOWNGRADE, Severity.LOW, 1),
        (RiskClass.A, RiskClass.C, AlertType.RISK_CLASS_DOWNGRADE, Severity.MEDIUM, 2),
        (RiskClass.C, RiskClass.D, AlertType.RISK_CLASS_DOWNGRADE, Severity.HIGH, 1),
        (RiskClass.C, RiskClass.A, AlertType.RISK_CLASS_UPGRADE, Severity.LOW, 2),
    ],
)
def test_class_changes_and_the_minimum_class_change_rule(
    before: RiskClass, after: RiskClass, kind: AlertType, severity: Severity, steps: int
) -> None:
    fact = RescoreFact(RescoreReason.SCHEDULED, "m1")
    change = Change(fact, score(before, 0.01), score(after, 0.01), NOW, fact_alert=False)
    (only,) = plan(change, [watcher()])
    assert (only.type, only.severity) == (kind, severity)
    assert plan(change, [watcher(AlertRules(minimum_class_change=steps))]) != []
    assert plan(change, [watcher(AlertRules(minimum_class_change=steps + 1))]) == []


def test_upgrade_to_a_suggests_room_to_grow() -> None:
    change = Change(
        RescoreFact(RescoreReason.SCHEDULED, "m1"),
        score(RiskClass.B, 0.01),
        score(RiskClass.A, 0.001),
        NOW,
        fact_alert=False,
    )
    assert plan(change, [watcher()])[0].suggested_action == SuggestedAction.ROOM_TO_GROW


def test_pd_threshold_is_raised_only_when_crossed_upwards() -> None:
    fact = StatementFact(date(2025, 1, 1), date(2025, 12, 31))
    rules = AlertRules(alert_types=(int(AlertType.PD_THRESHOLD_CROSSED),))
    crossing = Change(fact, score(RiskClass.B, 0.04), score(RiskClass.B, 0.06), NOW)
    (alert,) = plan(crossing, [watcher(rules, threshold=0.05)])
    assert alert.severity == Severity.MEDIUM
    assert "4.00 % → 6.00 %" in alert.summary
    above_already = Change(fact, score(RiskClass.B, 0.06), score(RiskClass.B, 0.07), NOW)
    assert plan(above_already, [watcher(rules, threshold=0.05)]) == []
    falling = Change(fact, score(RiskClass.B, 0.06), score(RiskClass.B, 0.04), NOW)
    assert plan(falling, [watcher(rules, threshold=0.05)]) == []
    no_threshold = Change(fact, score(RiskClass.B, 0.04), score(RiskClass.B, 0.9), NOW)
    assert plan(no_threshold, [watcher(rules, threshold=0.0)]) == []
    first_score = Change(fact, None, score(RiskClass.B, 0.06), NOW)
    assert len(plan(first_score, [watcher(rules, threshold=0.05)])) == 1


def test_rules_filter_by_type_and_minimum_severity() -> None:
    change = Change(
        event(EventType.PAYMENT_REMARK_REGISTERED),
        score(RiskClass.B, 0.02),
        score(RiskClass.C, 0.02),
        NOW,
    )
    everything = plan(change, [watcher()])
    assert [p.type for p in everything] == [
        AlertType.PAYMENT_REMARK_REGISTERED,
        AlertType.RISK_CLASS_DOWNGRADE,
    ]
    only_remarks = AlertRules(alert_types=(int(AlertType.PAYMENT_REMARK_REGISTERED),))
    assert [p.type for p in plan(change, [watcher(only_remarks)])] == [
        AlertType.PAYMENT_REMARK_REGISTERED
    ]
    assert plan(change, [watcher(AlertRules(minimum_severity=int(Severity.MEDIUM)))]) == []


def test_score_alerts_go_with_one_fact_only() -> None:
    before, after = score(RiskClass.A, 0.01), score(RiskClass.C, 0.2)
    first = Change(
        event(EventType.PAYMENT_REMARK_REGISTERED), before, after, NOW, score_alerts=False
    )
    last = Change(event(EventType.DEBT_COLLECTION_OPENED), before, after, NOW)
    kinds = [p.type for c in (first, last) for p in plan(c, [watcher(threshold=0.1)])]
    assert kinds == [
        AlertType.PAYMENT_REMARK_REGISTERED,
        AlertType.COLLECTION_CASE_OPENED,
        AlertType.RISK_CLASS_DOWNGRADE,
        AlertType.PD_THRESHOLD_CROSSED,
    ]


def test_board_change_matters_more_in_a_risky_company() -> None:
    fact = event(EventType.RESPONSIBLE_PERSON_CHANGED)
    calm = Change(fact, score(RiskClass.A, 0.01), score(RiskClass.A, 0.01), NOW)
    risky = Change(fact, score(RiskClass.C, 0.1), score(RiskClass.C, 0.1), NOW)
    assert plan(calm, [watcher()])[0].severity == Severity.INFO
    assert plan(risky, [watcher()])[0].severity == Severity.MEDIUM
    assert plan(risky, [watcher()])[0].suggested_action == SuggestedAction.REVIEW


def test_priority_without_exposure_is_zero() -> None:
    change = Change(event(EventType.DELETED_FROM_REGISTER), None, None, NOW)
    (alert,) = plan(change, [watcher(exposure=None)])
    assert alert.priority == 0.0
    assert alert.severity == Severity.CRITICAL


def test_a_fact_already_told_goes_only_to_lists_that_missed_it() -> None:
    told = NOW - timedelta(hours=1)
    change = Change(
        event(EventType.BANKRUPTCY_OPENED),
        score(RiskClass.B, 0.02),
        score(RiskClass.D, 0.02),
        NOW,
        fact_told_at=told,
    )
    heard = dataclasses.replace(watcher(threshold=0.01), since=told)
    missed = dataclasses.replace(watcher(), since=told + timedelta(seconds=1))
    unknown = watcher()
    planned = plan(change, [heard, missed, unknown])
    kinds = {w.watch_list_id: [a.type for a in planned if a.watcher is w] for w in (heard, missed)}
    assert kinds[heard.watch_list_id] == [AlertType.RISK_CLASS_DOWNGRADE]
    assert kinds[missed.watch_list_id] == [
        AlertType.BANKRUPTCY_OPENED,
        AlertType.RISK_CLASS_DOWNGRADE,
    ]
    assert [a.type for a in planned if a.watcher is unknown] == kinds[missed.watch_list_id]
    # Nothing told: every list hears the fact.
    fresh = dataclasses.replace(change, fact_told_at=None)
    assert [a.type for a in plan(fresh, [heard])] == kinds[missed.watch_list_id]


def _raw(cursor: str) -> bytes:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


def test_cursors_round_trip_and_are_bound_to_their_tenant() -> None:
    keys = cursors.CursorKeys(b"s" * 32)
    tenant, other = uuid.uuid4(), uuid.uuid4()
    position = cursors.Position(123_456, 7)
    cursor = keys.encode(position, tenant)
    assert keys.decode(cursor, tenant, "after_cursor") == position
    assert cursors.CursorKeys(b"s" * 32).decode(cursor, tenant, "c") == position  # any replica
    with pytest.raises(InvalidArgument) as foreign:
        keys.decode(cursor, other, "after_cursor")
    assert foreign.value.violations[0].field == "after_cursor"
    assert "another tenant" in foreign.value.violations[0].description
    for garbage in ("", "abc", cursor[:-2], "!!!!"):
        with pytest.raises(InvalidArgument):
            keys.decode(garbage, tenant, "cursor")
    assert cursors.Position(5, 1) < cursors.Position(5, 2) < cursors.Position(6, 0)
    assert cursors.Position.settled_below(10) < cursors.Position(10, 0)


def test_cursors_hide_the_cluster_position_and_refuse_forgeries() -> None:
    keys = cursors.CursorKeys(b"s" * 32)
    tenant, other = uuid.uuid4(), uuid.uuid4()
    position = cursors.Position(123_456, 7)
    cursor = keys.encode(position, tenant)
    raw = _raw(cursor)
    # Neither half of the position is in the cursor, and the next position's
    # cursor shares nothing with it but the version and the tenant's tag.
    assert struct.pack(">Q", 123_456) not in raw and struct.pack(">Q", 7) not in raw
    following = _raw(keys.encode(cursors.Position(123_456, 8), tenant))
    assert following[0] == raw[0] and following[17:21] == raw[17:21]
    assert sum(a == b for a, b in zip(following[1:17], raw[1:17], strict=True)) < 6
    # The same position is another cursor for another tenant.
    assert keys.encode(position, other) != cursor
    # A flipped bit anywhere, or another deployment's secret: not issued here.
    for i in (0, 1, 16, 21, len(raw) - 1):
        flipped = bytearray(raw)
        flipped[i] ^= 0x01
        tampered = base64.urlsafe_b64encode(bytes(flipped)).decode().rstrip("=")
        with pytest.raises(InvalidArgument):
            keys.decode(tampered, tenant, "cursor")
    with pytest.raises(InvalidArgument) as elsewhere:
        cursors.CursorKeys(b"t" * 32).decode(cursor, tenant, "cursor")
    assert "not a cursor this server issued" in elsewhere.value.violations[0].description
    with pytest.raises(ValueError):
        cursors.CursorKeys(b"short")


def test_cursors_of_earlier_releases_resume_for_a_while_after_the_upgrade() -> None:
    made = datetime.now(UTC)
    upgraded = cursors.CursorKeys(b"s" * 32, made)
    tenant, other = uuid.uuid4(), uuid.uuid4()
    position = cursors.Position(99, 3)
    assert upgraded.decode(legacy_cursor(position, tenant), tenant, "after_cursor") == position
    with pytest.raises(InvalidArgument):
        upgraded.decode(legacy_cursor(position, other), tenant, "after_cursor")
    with pytest.raises(InvalidArgument):
        upgraded.decode(legacy_cursor(cursors.Position(2**64 - 1, 1), tenant), tenant, "cursor")
    # Past the window, or in a deployment that never issued them: expired.
    long_ago = made - timedelta(days=cursors.LEGACY_DAYS, seconds=1)
    for keys in (cursors.CursorKeys(b"s" * 32, long_ago), cursors.CursorKeys(b"s" * 32)):
        assert not keys.legacy_accepted()
        with pytest.raises(FailedPrecondition) as expired:
            keys.decode(legacy_cursor(position, tenant), tenant, "after_cursor")
        assert expired.value.violations[0].type == "CURSOR_EXPIRED"
        assert keys.decode(upgraded.encode(position, tenant), tenant, "c") == position


@pytest.mark.parametrize(
    ("before", "after", "default"),
    [
        (RiskClass.A, RiskClass.B, SuggestedAction.MONITOR),
        (RiskClass.B, RiskClass.C, SuggestedAction.REDUCE_LIMIT),
        (RiskClass.A, RiskClass.D, SuggestedAction.REQUIRE_PREPAYMENT),
        (RiskClass.C, RiskClass.B, SuggestedAction.MONITOR),
        (RiskClass.B, RiskClass.A, SuggestedAction.ROOM_TO_GROW),
    ],
)
def test_a_class_change_suggests_the_credit_policys_action_for_the_new_class(
    before: RiskClass, after: RiskClass, default: SuggestedAction
) -> None:
    fact = RescoreFact(RescoreReason.MODEL_CHANGED, "m2")
    change = Change(fact, score(before, 0.01), score(after, 0.01), NOW, fact_alert=False)
    (alert,) = plan(change, [watcher()])
    assert alert.suggested_action == default
    strict = dataclasses.replace(
        watcher(), class_actions=dict.fromkeys(RiskClass, SuggestedAction.STOP_CREDIT)
    )
    (alert,) = plan(change, [strict])
    assert alert.suggested_action == SuggestedAction.STOP_CREDIT


def test_other_alerts_keep_their_own_advice_whatever_the_policy() -> None:
    change = Change(
        event(EventType.BANKRUPTCY_OPENED), score(RiskClass.B, 0.02), score(RiskClass.D, 0.02), NOW
    )
    lenient = dataclasses.replace(
        watcher(), class_actions=dict.fromkeys(RiskClass, SuggestedAction.NONE)
    )
    assert [(p.type, p.suggested_action) for p in plan(change, [lenient])] == [
        (AlertType.BANKRUPTCY_OPENED, SuggestedAction.STOP_CREDIT),
        (AlertType.RISK_CLASS_DOWNGRADE, SuggestedAction.NONE),
    ]
