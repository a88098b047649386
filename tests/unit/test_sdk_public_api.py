"""The SDK's public surface: a change to `creditwatch.client.__all__` is a deliberate act."""

from __future__ import annotations

import inspect
from decimal import Decimal

import grpc
import pytest

import creditwatch.client as sdk
from creditwatch.client import CreditwatchError, RetryPolicy, entry, money

PUBLIC = [
    "MAX_BATCH",
    "RESULT_COLUMNS",
    "STATEMENT_COLUMNS",
    "AbortedError",
    "AlertStream",
    "AlertsClient",
    "AlreadyExistsError",
    "Amount",
    "CreditLimitsClient",
    "CreditwatchClient",
    "CreditwatchError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "MoneyLike",
    "NotFoundError",
    "PemSource",
    "PermissionDeniedError",
    "PortfolioClient",
    "ResourceExhaustedError",
    "RetryPolicy",
    "RiskClassLike",
    "ScoringClient",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "WatchListsClient",
    "alert_filter",
    "company",
    "entries_from_csv",
    "entry",
    "entry_name",
    "money",
    "result_row",
    "score_item",
    "score_items_from_csv",
]


def test_all_is_pinned() -> None:
    assert sdk.__all__ == PUBLIC


def test_every_public_class_and_function_is_documented() -> None:
    for name in sdk.__all__:
        value = getattr(sdk, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name} has no docstring"
            for member, attribute in vars(value).items():
                if inspect.isfunction(attribute) and not member.startswith("_"):
                    assert inspect.getdoc(attribute), f"{name}.{member} has no docstring"


def test_every_error_class_derives_from_the_base() -> None:
    errors = [getattr(sdk, n) for n in sdk.__all__ if n.endswith("Error")]
    assert len(errors) == 13
    assert all(issubclass(e, CreditwatchError) for e in errors)


def test_private_modules_stay_private() -> None:
    # Besides __all__: the public modules, there once other tests imported them.
    public_modules = {n for n in dir(sdk) if not n.startswith("_") and n not in sdk.__all__}
    assert public_modules <= {"testing", "cli", "mail"}


@pytest.mark.parametrize(
    ("amount", "units", "nanos"),
    [
        (250_000, 250_000, 0),
        ("1999.50", 1999, 500_000_000),
        (Decimal("0.000000001"), 0, 1),
        (0.1, 0, 100_000_000),
        ("-12.25", -12, -250_000_000),
    ],
)
def test_money_splits_major_units_into_units_and_nanos(
    amount: sdk.Amount, units: int, nanos: int
) -> None:
    value = money("NOK", amount)
    assert (value.currency_code, value.units, value.nanos) == ("NOK", units, nanos)


def test_money_refuses_sub_nano_amounts() -> None:
    with pytest.raises(ValueError, match="9 decimals"):
        money("NOK", "0.0000000001")


def test_entry_builds_a_watch_list_entry() -> None:
    built = entry(
        "NO",
        "923609016",
        exposure=("NOK", 250_000),
        credit_limit=money("EUR", "10.5"),
        external_reference="crm-17",
        labels={"segment": "sme"},
    )
    assert (built.company.country, built.company.register_number) == ("NO", "923609016")
    assert (built.exposure.currency_code, built.exposure.units) == ("NOK", 250_000)
    assert (built.credit_limit.units, built.credit_limit.nanos) == (10, 500_000_000)
    assert built.external_reference == "crm-17"
    assert dict(built.labels) == {"segment": "sme"}
    assert not entry("NO", "923609016").HasField("exposure")


def test_retry_backoff_grows_to_its_cap_with_bounded_jitter() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2.0, jitter=0.2)
    # Past where multiplier ** (attempt - 1) overflows a float: still the cap.
    steps = [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0), (2_000, 1.0)]
    for attempt, ceiling in steps:
        waits = [policy.backoff(attempt) for _ in range(200)]
        assert all(ceiling * 0.8 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1, "no jitter"
    # An integer multiplier, and no initial wait at all, past 2,000 attempts.
    assert RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2).backoff(2_000) <= 1.0
    assert RetryPolicy(initial_backoff=0.0, max_backoff=1.0).backoff(2_000) == 0.0
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    assert RetryPolicy.disabled().max_attempts == 1


def test_error_text_names_code_fields_and_resource() -> None:
    error = sdk.InvalidArgumentError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "2 invalid fields",
        field_violations={"entries[3].company.register_number": "bad check digit"},
    )
    assert str(error) == (
        "INVALID_ARGUMENT: 2 invalid fields\n  entries[3].company.register_number: bad check digit"
    )


def test_shifted_indexes_keep_every_detail_of_the_error() -> None:
    import grpc

    from creditwatch.client._batches import shift_indexes

    error = sdk.InvalidArgumentError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad entries",
        field_violations={"entries[3].company": "duplicate of entries[1]"},
        preconditions=(("SOMETHING", "subject"),),
        precondition_types=("SOMETHING",),
        quota_violations=(("tenant", "too many"),),
    )
    error.add_note("entries[0:1000] were applied")
    shifted = shift_indexes(error, "entries", 1_000)
    assert shifted.field_violations == {"entries[1003].company": "duplicate of entries[1001]"}
    assert shifted.preconditions == (("SOMETHING", "subject"),)
    assert shifted.quota_violations == (("tenant", "too many"),)
    assert shifted.__notes__ == ["entries[0:1000] were applied"]
