"""Events → risk state → override policy, and PD bands: the rules behind a class."""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditwatch.server.config import Settings, override_policy
from creditwatch.server.domain.events import CompanyEvent, EventType, RiskState
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.domain.risk_classes import PdBands
from creditwatch.server.domain.scores import RiskClass

REPO = Path(__file__).resolve().parents[2]
BANDS = PdBands(a_below=0.01, b_below=0.03, c_below=0.15)


def _at(day: int) -> datetime:
    return datetime(2026, 1, day, tzinfo=UTC)


def test_remarks_and_cases_open_and_close_by_reference() -> None:
    state = RiskState.of(
        [
            CompanyEvent(EventType.PAYMENT_REMARK_REGISTERED, _at(1), "r1"),
            CompanyEvent(EventType.PAYMENT_REMARK_REGISTERED, _at(2), "r2"),
            CompanyEvent(EventType.PAYMENT_REMARK_REMOVED, _at(3), "r1"),
            CompanyEvent(EventType.DEBT_COLLECTION_OPENED, _at(4), "c1"),
            CompanyEvent(EventType.DEBT_COLLECTION_CLOSED, _at(5), "c1"),
            CompanyEvent(EventType.DEBT_COLLECTION_OPENED, _at(6), ""),
        ]
    )
    assert (state.open_payment_remarks, state.open_collection_cases) == (1, 1)
    assert not state.bankruptcy_opened


def test_events_are_replayed_in_time_order_not_arrival_order() -> None:
    state = RiskState.of(
        [
            CompanyEvent(EventType.PAYMENT_REMARK_REMOVED, _at(9), "r1"),
            CompanyEvent(EventType.PAYMENT_REMARK_REGISTERED, _at(1), "r1"),
        ]
    )
    assert state.open_payment_remarks == 0


@pytest.mark.parametrize("when", [_at(3), None])
def test_at_the_same_time_an_opening_comes_before_its_closing(when: datetime | None) -> None:
    """Events of one day share a time; stored events come back in event-id
    order, which says nothing about which came first."""
    state = RiskState.of(
        [
            CompanyEvent(EventType.PAYMENT_REMARK_REMOVED, when, "a-1"),
            CompanyEvent(EventType.DEBT_COLLECTION_CLOSED, when, "c-1"),
            CompanyEvent(EventType.PAYMENT_REMARK_REGISTERED, when, "a-1"),
            CompanyEvent(EventType.DEBT_COLLECTION_OPENED, when, "c-1"),
        ]
    )
    assert (state.open_payment_remarks, state.open_collection_cases) == (0, 0)


@pytest.mark.parametrize(
    ("model_class", "state", "expected", "codes"),
    [
        (RiskClass.A, RiskState(), RiskClass.A, []),
        (RiskClass.A, RiskState(bankruptcy_opened=True), RiskClass.D, ["OVERRIDE_BANKRUPTCY"]),
        (
            RiskClass.B,
            RiskState(compulsory_dissolution=True),
            RiskClass.D,
            ["OVERRIDE_COMPULSORY_DISSOLUTION"],
        ),
        (RiskClass.A, RiskState(open_payment_remarks=2), RiskClass.B, ["OVERRIDE_PAYMENT_REMARK"]),
        (
            RiskClass.A,
            RiskState(open_payment_remarks=1, open_collection_cases=1),
            RiskClass.C,
            ["OVERRIDE_PAYMENT_REMARK", "OVERRIDE_COLLECTION_CASE"],
        ),
        (
            RiskClass.C,
            RiskState(open_payment_remarks=1, open_collection_cases=3),
            RiskClass.D,
            ["OVERRIDE_PAYMENT_REMARK", "OVERRIDE_COLLECTION_CASE"],
        ),
        # One creditor's overdue invoices, however many, move nothing.
        (
            RiskClass.A,
            RiskState(seriously_overdue_invoices=5, overdue_creditors=1),
            RiskClass.A,
            [],
        ),
        (
            RiskClass.A,
            RiskState(seriously_overdue_invoices=2, overdue_creditors=2),
            RiskClass.B,
            ["OVERRIDE_OVERDUE_PAYMENTS"],
        ),
    ],
)
def test_default_policy(
    model_class: RiskClass, state: RiskState, expected: RiskClass, codes: list[str]
) -> None:
    final, reasons = OverridePolicy().apply(model_class, state)
    assert final == expected
    assert [r.code for r in reasons] == codes


def test_policy_is_data_and_typos_are_refused() -> None:
    lenient = OverridePolicy.from_json({"payment_remark_notches": 0, "version": "p2"})
    assert lenient.apply(RiskClass.A, RiskState(open_payment_remarks=1))[0] == RiskClass.A
    with pytest.raises(ValueError, match="unknown"):
        OverridePolicy.from_json({"bankrupcy_forces_d": False})


@pytest.mark.parametrize(
    ("pd", "risk_class"),
    [(0.0, RiskClass.A), (0.00999, RiskClass.A), (0.01, RiskClass.B), (0.03, RiskClass.C),
     (0.1499, RiskClass.C), (0.15, RiskClass.D), (1.0, RiskClass.D)],
)  # fmt: skip
def test_band_edges_belong_to_the_higher_class(pd: float, risk_class: RiskClass) -> None:
    assert BANDS.classify(pd) == risk_class


@given(st.floats(0.0, 1.0))
def test_every_pd_lands_in_the_band_of_its_class(pd: float) -> None:
    low, high = BANDS.bounds(BANDS.classify(pd))
    assert low <= pd and (pd < high or high == 1.0)


def test_bands_must_increase() -> None:
    with pytest.raises(ValueError):
        PdBands(0.05, 0.03, 0.2)


def test_a_policy_file_sets_what_it_names_and_keeps_the_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"version": "bank-1", "collection_case_notches": 2}))
    policy = override_policy(path)
    assert policy == OverridePolicy(version="bank-1", collection_case_notches=2)
    assert policy.describe()["collection_case_notches"] == 2
    state = RiskState(open_collection_cases=1)
    assert policy.apply(RiskClass.A, state)[0] == RiskClass.C
    assert OverridePolicy().apply(RiskClass.A, state)[0] == RiskClass.B


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"payment_remark_notch": 1}', "unknown override policy keys: ['payment_remark_notch']"),
        ('{"payment_remark_notches": true}', "payment_remark_notches must be a JSON integer"),
        ('{"payment_remark_notches": 1.5}', "payment_remark_notches must be a JSON integer"),
        ('{"bankruptcy_forces_d": 0}', "bankruptcy_forces_d must be a JSON true or false"),
        ('{"version": 2}', "version must be a JSON string"),
        ('{"overdue_days": -30}', "must not be negative"),
        ('{"dissolution_forces_d": false}', "dissolution_forces_d cannot be switched off"),
        ('"strict"', "a JSON object is expected"),
        ('{"version": " "}', "version must not be empty"),
        ('{"payment_remark_notches": 4}', "notches must be at most 3"),
        # Bound as a 32-bit parameter in every intake's query: refused here,
        # not there (where it failed every intake).
        ('{"overdue_days": 2147483648}', "overdue_days must be at most 3650"),
        ('{"overdue_days": 30, "overdue_days": 60}', "overdue_days is given twice"),
        ('{"overdue_min_creditors": 0}', "overdue_min_creditors must be at least 1"),
        ("{", "override policy"),
    ],
)
def test_a_bad_policy_file_is_refused_with_its_name_and_the_problem(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "policy.json"
    path.write_text(content)
    with pytest.raises(ValueError) as caught:
        override_policy(path)
    assert str(path) in str(caught.value)
    assert message in str(caught.value)


def test_a_missing_policy_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nowhere\.json"):
        override_policy(tmp_path / "nowhere.json")


def test_an_empty_policy_variable_means_the_built_in_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CREDITWATCH_OVERRIDE_POLICY_FILE", "")
    monkeypatch.setenv("CREDITWATCH_TLS_CLIENT_CA_FILE", "")
    settings = Settings()
    assert settings.override_policy_file is None
    assert override_policy(settings.override_policy_file) == OverridePolicy()
    # Only the policy file: an empty TLS file is still a path that stops the
    # start-up, not mTLS quietly off.
    assert settings.tls_client_ca_file is not None


def test_the_tag_names_the_values_and_the_version() -> None:
    built_in = OverridePolicy()
    assert len(built_in.tag) == 16 and built_in.fingerprint.startswith(built_in.tag)
    assert OverridePolicy().tag == built_in.tag  # the same values, the same tag
    assert OverridePolicy(payment_remark_notches=2).tag != built_in.tag
    # A new version of the same values is a new policy (how an operator
    # makes an earlier policy current again).
    assert OverridePolicy(version="overrides-2026.11.2").tag != built_in.tag


def test_the_scores_before_0015_carry_the_built_in_policy_s_tag() -> None:
    path = REPO / "migrations" / "versions" / "0015_scores_carry_their_override_policy.py"
    spec = importlib.util.spec_from_file_location("migration_0015", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    # The only policy there was before 0014, spelt out (one creditor's
    # overdue invoice was enough then): its tag is history.
    before = OverridePolicy(
        version="overrides-2026.11.1",
        bankruptcy_forces_d=True,
        dissolution_forces_d=True,
        payment_remark_notches=1,
        collection_case_notches=1,
        overdue_days=90,
        overdue_payment_notches=1,
        overdue_min_creditors=1,
    )
    assert before.tag == migration.BUILT_IN_TAG
    # Today's built-in policy wants two creditors: another policy, another tag.
    assert OverridePolicy().tag != migration.BUILT_IN_TAG


def test_the_overdue_reason_names_the_invoices_and_the_creditors() -> None:
    state = RiskState(seriously_overdue_invoices=3, overdue_creditors=2)
    _, (reason,) = OverridePolicy().apply(RiskClass.B, state)
    assert reason.code == "OVERRIDE_OVERDUE_PAYMENTS"
    assert reason.description == (
        "3 open invoice(s) more than 90 days past due reported by 2 creditor(s): 1 class(es) worse"
    )


@given(
    invoices=st.integers(1, 50),
    creditors=st.integers(1, 50),
    minimum=st.integers(1, 60),
    model_class=st.sampled_from(list(RiskClass)),
)
def test_overdue_invoices_count_only_from_the_minimum_number_of_creditors(
    invoices: int, creditors: int, minimum: int, model_class: RiskClass
) -> None:
    policy = OverridePolicy.from_json({"overdue_min_creditors": minimum})
    state = RiskState(
        seriously_overdue_invoices=min(invoices, creditors), overdue_creditors=creditors
    )
    final, reasons = policy.apply(model_class, state)
    if creditors >= minimum:
        assert final == RiskClass(min(int(RiskClass.D), int(model_class) + 1))
        assert [r.code for r in reasons] == ["OVERRIDE_OVERDUE_PAYMENTS"]
    else:
        assert (final, reasons) == (model_class, [])


@given(st.integers(-(2**40), 0))
def test_overdue_min_creditors_below_one_is_refused(minimum: int) -> None:
    with pytest.raises(ValueError, match="overdue_min_creditors must be at least 1"):
        OverridePolicy.from_json({"overdue_min_creditors": minimum})


@pytest.mark.parametrize("value", ["true", "1.5", '"2"', "null"])
def test_overdue_min_creditors_must_be_a_json_integer(tmp_path: Path, value: str) -> None:
    path = tmp_path / "policy.json"
    path.write_text(f'{{"overdue_min_creditors": {value}}}')
    with pytest.raises(ValueError, match="overdue_min_creditors must be a JSON integer"):
        override_policy(path)


def test_overdue_min_creditors_is_read_described_and_tagged(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"version": "bank-2", "overdue_min_creditors": 3}))
    policy = override_policy(path)
    assert policy == OverridePolicy(version="bank-2", overdue_min_creditors=3)
    assert policy.describe()["overdue_min_creditors"] == 3
    assert OverridePolicy().describe()["overdue_min_creditors"] == 2
    tags = {OverridePolicy(overdue_min_creditors=n).tag for n in (1, 2, 3)}
    assert len(tags) == 3
    # One creditor is enough (what every policy did before the setting) on
    # the policy's say-so only.
    lone = RiskState(seriously_overdue_invoices=1, overdue_creditors=1)
    assert OverridePolicy(overdue_min_creditors=1).apply(RiskClass.A, lone)[0] == RiskClass.B
    two = RiskState(seriously_overdue_invoices=4, overdue_creditors=2)
    assert policy.apply(RiskClass.A, two)[0] == RiskClass.A
