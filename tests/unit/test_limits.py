"""Credit-limit rules, case by case, with the figures computed by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from creditwatch.server.domain.errors import InvalidArgument
from creditwatch.server.domain.financials import FinancialStatement
from creditwatch.server.domain.limits import (
    DEFAULT_POLICY,
    CreditPolicy,
    Outcome,
    Request,
    decide,
)
from creditwatch.server.domain.scores import RiskClass, StoredScore

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def score(risk_class: RiskClass) -> StoredScore:
    return StoredScore(0.01, risk_class, risk_class, (), "m", None, NOW)


def statement(
    equity: float | None = 10_000_000, sales: float | None = 50_000_000
) -> FinancialStatement:
    return FinancialStatement(
        period_start=date(2025, 1, 1), period_end=date(2025, 12, 31), currency="NOK",
        equity=equity, sales=sales,
    )  # fmt: skip


def ask(amount: int, days: int = 60, exposure: int | None = None) -> Request:
    return Request(
        "NOK", Decimal(amount), days, Decimal(exposure) if exposure is not None else None
    )


def test_class_b_is_capped_by_the_smaller_of_equity_and_sales() -> None:
    # B: min(0.10 x 10,000,000, 0.05 x 50,000,000) = min(1,000,000, 2,500,000).
    decision = decide(ask(3_000_000, 90), score(RiskClass.B), statement(), DEFAULT_POLICY, NOW)
    assert decision.outcome == Outcome.PARTIALLY_APPROVED
    assert decision.approved == Decimal(1_000_000)
    assert decision.max_payment_terms_days == 60
    assert [code for code, _ in decision.reasons] == ["CAPPED_BY_EQUITY", "TERMS_CAPPED"]
    assert decision.valid_until == NOW + timedelta(days=365)


def test_within_the_cap_is_approved_and_amounts_round_down() -> None:
    decision = decide(ask(999_999), score(RiskClass.B), statement(), DEFAULT_POLICY, NOW)
    assert (decision.outcome, decision.approved) == (Outcome.APPROVED, Decimal(999_999))
    # A: min(0.20 x 1,234,567.89, 0.10 x sales) = 246,913.578 -> 246,913 whole units.
    odd = decide(
        ask(10**7), score(RiskClass.A), statement(equity=1_234_567.89), DEFAULT_POLICY, NOW
    )
    assert odd.approved == Decimal(246_913)


def test_negative_equity_declines_with_cap_zero() -> None:
    decision = decide(ask(1_000), score(RiskClass.C), statement(equity=-5), DEFAULT_POLICY, NOW)
    assert decision.outcome == Outcome.DECLINED
    assert decision.reasons[0][0] == "CAP_ZERO"
    assert decision.approved == 0 and decision.valid_until is None


def test_less_than_one_unit_asked_declines_for_that_reason_and_keeps_the_others() -> None:
    # C: cap min(0.05 x 10M, 0.02 x 50M) = 500,000 is not what binds; 0.50
    # rounds down to 0 whole units. C allows 30 days, not 60.
    decision = decide(
        Request("NOK", Decimal("0.50"), 60), score(RiskClass.C), statement(), DEFAULT_POLICY, NOW
    )
    assert (decision.outcome, decision.approved) == (Outcome.DECLINED, 0)
    assert [code for code, _ in decision.reasons] == ["AMOUNT_BELOW_ONE_UNIT", "TERMS_CAPPED"]


def test_a_fraction_rounded_away_is_a_partial_approval_that_says_so() -> None:
    # A: 60 days allowed; the cap is far above 100.50 NOK, which rounds down to 100.
    decision = decide(
        Request("NOK", Decimal("100.50"), 30), score(RiskClass.A), statement(), DEFAULT_POLICY, NOW
    )
    assert (decision.outcome, decision.approved) == (Outcome.PARTIALLY_APPROVED, 100)
    assert [code for code, _ in decision.reasons] == ["ROUNDED_TO_WHOLE_UNITS"]


def test_a_cap_below_one_unit_is_cap_zero_with_the_terms_still_named() -> None:
    # C: 0.05 x equity 10 = 0.50 NOK, 0 in whole units; 60 days asked, 30 allowed.
    decision = decide(ask(1_000), score(RiskClass.C), statement(equity=10), DEFAULT_POLICY, NOW)
    assert decision.outcome == Outcome.DECLINED
    assert decision.reasons == [
        ("CAP_ZERO", "the policy's cap is 0: 0.05 x equity 10 = 0 NOK (class C)"),
        ("TERMS_CAPPED", "class C allows at most 30 days of payment terms"),
    ]


@pytest.mark.parametrize(
    ("now", "period_end", "too_old"),
    [
        # 18 months before 31 May 2026 is 30 November 2024 (not the 28th).
        (date(2026, 5, 31), date(2024, 11, 29), True),
        (date(2026, 5, 31), date(2024, 11, 30), False),
        # ... and before 31 August 2025 it is 29 February 2024, a leap day.
        (date(2025, 8, 31), date(2024, 2, 28), True),
        (date(2025, 8, 31), date(2024, 2, 29), False),
        (date(2026, 1, 15), date(2024, 7, 14), True),
        (date(2026, 1, 15), date(2024, 7, 15), False),
    ],
)
def test_statement_age_counts_whole_months_to_the_last_valid_day(
    now: date, period_end: date, too_old: bool
) -> None:
    statement = FinancialStatement(
        period_start=period_end - timedelta(days=364), period_end=period_end, currency="NOK",
        equity=10_000_000, sales=50_000_000,
    )  # fmt: skip
    at = datetime(now.year, now.month, now.day, 12, tzinfo=UTC)
    decision = decide(ask(1_000), score(RiskClass.A), statement, DEFAULT_POLICY, at)
    assert (decision.outcome == Outcome.REFERRED) is too_old
    assert [code for code, _ in decision.reasons] == (["STATEMENT_TOO_OLD"] if too_old else [])


def test_class_policy_violations_name_the_entries_in_their_given_order() -> None:
    default = DEFAULT_POLICY.classes
    sent = {  # D, C, B, A, as a client may send them
        RiskClass.D: replace(default[RiskClass.D], max_share_of_equity=99.0),
        RiskClass.C: default[RiskClass.C],
        RiskClass.B: replace(default[RiskClass.B], max_payment_terms_days=400),
        RiskClass.A: default[RiskClass.A],
    }
    with pytest.raises(InvalidArgument) as error:
        CreditPolicy(classes=sent).validate()
    assert {v.field for v in error.value.violations} == {
        "credit_policy.class_policies[0].max_share_of_equity",
        "credit_policy.class_policies[2].max_payment_terms_days",
    }


def test_rules_apply_in_order() -> None:
    old = FinancialStatement(
        period_start=date(2023, 1, 1), period_end=date(2023, 12, 31), currency="NOK"
    )
    assert decide(ask(1), None, statement(), DEFAULT_POLICY, NOW).reasons[0][0] == "NO_SCORE"
    # Decline class first, even with an old statement.
    assert (
        decide(ask(1), score(RiskClass.D), old, DEFAULT_POLICY, NOW).reasons[0][0]
        == "DECLINE_CLASS"
    )
    assert (
        decide(ask(1), score(RiskClass.A), None, DEFAULT_POLICY, NOW).reasons[0][0]
        == "STATEMENT_MISSING"
    )
    assert (
        decide(ask(1), score(RiskClass.A), old, DEFAULT_POLICY, NOW).reasons[0][0]
        == "STATEMENT_TOO_OLD"
    )
    euro = Request("EUR", Decimal(1), 30)
    assert (
        decide(euro, score(RiskClass.A), statement(), DEFAULT_POLICY, NOW).outcome
        == Outcome.REFERRED
    )
    both_missing = statement(equity=None, sales=None)
    assert (
        decide(ask(1), score(RiskClass.A), both_missing, DEFAULT_POLICY, NOW).outcome
        == Outcome.REFERRED
    )


def test_exposure_above_the_approved_amount_is_named() -> None:
    decision = decide(
        ask(500_000, exposure=700_000), score(RiskClass.B), statement(), DEFAULT_POLICY, NOW
    )
    assert decision.outcome == Outcome.APPROVED
    assert [code for code, _ in decision.reasons] == ["EXPOSURE_ABOVE_LIMIT"]


def test_policy_validation_names_every_bad_field() -> None:
    bad = replace(DEFAULT_POLICY, decision_validity_days=0, insolvency_waiting_days=-1)
    with pytest.raises(InvalidArgument) as error:
        bad.validate()
    assert {v.field for v in error.value.violations} == {
        "credit_policy.decision_validity_days",
        "credit_policy.insolvency_waiting_days",
    }
    assert DEFAULT_POLICY.from_json(DEFAULT_POLICY.to_json(), 1, None) == DEFAULT_POLICY
