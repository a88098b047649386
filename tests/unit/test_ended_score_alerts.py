"""Alert rules for a score that ends: class D lifted with nothing left to score."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType

from creditwatch.server.domain.alerts import (
    AlertType,
    Change,
    EventFact,
    MasterDataFact,
    Severity,
    SuggestedAction,
    Watcher,
    plan,
)
from creditwatch.server.domain.events import CompanyEvent, EventType
from creditwatch.server.domain.scores import RiskClass, StoredScore
from creditwatch.server.domain.watchlists import AlertRules

NOW = datetime(2026, 11, 24, tzinfo=UTC)
CLASS_D = StoredScore(0.2, RiskClass.D, RiskClass.D, (), "m1", None, NOW)
STATUS = MasterDataFact(("status",))
ANY_ALERT = AlertRules()


def _watcher(rules: AlertRules = ANY_ALERT, threshold: float = 0.0) -> Watcher:
    return Watcher(
        tenant_id=uuid.uuid4(),
        watch_list_id=uuid.uuid4(),
        rules=rules,
        pd_threshold=threshold,
        exposure_currency="NOK",
        exposure_amount=Decimal(1_000),
    )


def test_an_ended_score_is_an_upgrade_without_a_class_and_asks_for_a_review() -> None:
    change = Change(STATUS, CLASS_D, None, NOW)
    planned = plan(change, [_watcher(threshold=0.01)])
    assert [(p.type, p.severity, p.suggested_action, p.priority) for p in planned] == [
        (AlertType.MASTER_DATA_CHANGED, Severity.INFO, SuggestedAction.NONE, 1_000.0),
        (AlertType.RISK_CLASS_UPGRADE, Severity.LOW, SuggestedAction.REVIEW, 2_000.0),
    ]
    assert planned[0].summary == "Register data changed: status; risk class D → unscored"
    assert planned[1].summary == (
        "Risk class D → unscored (PD 20.00 % → none): what set class D no longer "
        "applies, and there is no financial statement to score"
    )


def test_an_ended_score_passes_any_minimum_class_change_and_ignores_class_policies() -> None:
    change = Change(STATUS, CLASS_D, None, NOW, fact_alert=False)
    strict = AlertRules(minimum_class_change=3)
    policy = MappingProxyType(dict.fromkeys(RiskClass, SuggestedAction.STOP_CREDIT))
    watcher = Watcher(
        tenant_id=uuid.uuid4(),
        watch_list_id=uuid.uuid4(),
        rules=strict,
        pd_threshold=0.0,
        class_actions=policy,
    )
    (alert,) = plan(change, [watcher])
    assert (alert.type, alert.suggested_action) == (
        AlertType.RISK_CLASS_UPGRADE,
        SuggestedAction.REVIEW,
    )


def test_only_the_last_fact_of_an_intake_tells_that_the_score_ended() -> None:
    closed = EventFact("e1", CompanyEvent(EventType.DEBT_COLLECTION_CLOSED, NOW), "x", {}, "t")
    first = Change(closed, CLASS_D, None, NOW, score_alerts=False)
    assert [p.type for p in plan(first, [_watcher()])] == [AlertType.COLLECTION_CASE_CLOSED]
    last = Change(closed, CLASS_D, None, NOW)
    assert [p.type for p in plan(last, [_watcher()])] == [
        AlertType.COLLECTION_CASE_CLOSED,
        AlertType.RISK_CLASS_UPGRADE,
    ]


def test_a_company_that_stays_unscored_raises_no_class_alert() -> None:
    change = Change(STATUS, None, None, NOW)
    assert [p.type for p in plan(change, [_watcher()])] == [AlertType.MASTER_DATA_CHANGED]


def test_a_watch_list_that_wants_no_upgrades_is_not_told() -> None:
    only_downgrades = AlertRules(alert_types=(int(AlertType.RISK_CLASS_DOWNGRADE),))
    assert plan(Change(STATUS, CLASS_D, None, NOW), [_watcher(only_downgrades)]) == []
