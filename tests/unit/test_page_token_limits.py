"""Crafted page tokens are INVALID_ARGUMENT on `page_token`, whatever they hold:
too long, nested deeper than the JSON parser goes, or any other bytes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from creditwatch.server.domain import paging
from creditwatch.server.domain.errors import InvalidArgument
from creditwatch.server.domain.paging import MAX_TOKEN_CHARS, encode_token, page_request

FILTERS = paging.fingerprint("tenant", "filters")
STAMP = datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC).isoformat()
BIGINT = 2**63 - 1


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _refused(token: str) -> str:
    with pytest.raises(InvalidArgument) as caught:
        page_request(10, token, FILTERS, default_size=10, max_size=100)
    (violation,) = caught.value.violations
    assert violation.field == "page_token"
    return violation.description


@pytest.mark.parametrize(
    "key",
    [
        # ListAlerts by priority: priority, severity, create time, xid, seq.
        (-1.7976931348623157e308, 5, STAMP, BIGINT, BIGINT),
        (STAMP, BIGINT, BIGINT),  # ListAlerts by time
        (BIGINT, 0.30000000000000004, "9223372036854775806.999999999"),  # ListSegmentEntries
        (  # ListSegmentEntries now: the splits, the last entry's loss and company
            0.30000000000000004,
            "9223372036854775806.999999999",
            "999999999999999." + "9" * 50,
            "1234567890123456",
            "NO",
        ),
        (STAMP, "9b2e6f9a-5c1d-4e8b-a0f4-1c2d3e4f5a6b"),  # ListWatchLists, ListCreditLimits
        ("NO", "923609016"),  # ListEntries
        (BIGINT,),  # ListModels
    ],
)
def test_the_longest_tokens_the_server_issues_fit_well_within_the_cap(
    key: tuple[object, ...],
) -> None:
    token = encode_token(key, FILTERS)
    assert len(token) <= MAX_TOKEN_CHARS // 4
    assert page_request(10, token, FILTERS, default_size=10, max_size=100).after == key


def test_a_token_longer_than_the_cap_is_refused_before_it_is_decoded() -> None:
    padded = encode_token(("NO", "923609016"), FILTERS) + "A" * MAX_TOKEN_CHARS
    assert "longer than any token" in _refused(padded)
    assert "longer than any token" in _refused("A" * 2_000_000)


def test_deeply_nested_json_is_refused_not_an_internal_error() -> None:
    _refused(_b64("[" * 200_000))
    _refused(_b64('{"v": 1, "k": ' + "[" * 200_000 + "]" * 200_000 + ', "f": "x"}'))
    # Within the cap, as deep as it allows.
    _refused(_b64("[" * 700 + "]" * 60))


def test_a_decoder_that_gives_up_on_depth_is_a_refused_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def too_deep(_: object) -> object:
        raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")

    monkeypatch.setattr(paging.json, "loads", too_deep)
    _refused(encode_token(("NO", "923609016"), FILTERS))


def _outcome(token: str) -> None:
    try:
        page_request(10, token, FILTERS, default_size=10, max_size=100)
    except InvalidArgument as error:
        assert [v.field for v in error.violations] == ["page_token"]


@given(st.text(max_size=2_000))
def test_any_text_is_a_page_or_a_refusal_of_page_token(token: str) -> None:
    _outcome(token)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_any_json_is_a_page_or_a_refusal_of_page_token(body: object) -> None:
    _outcome(_b64(json.dumps(body)))
    _outcome(_b64(json.dumps({"v": 1, "k": body, "f": FILTERS})))
