"""Opaque page tokens for keyset pagination.

A token carries the last key of the previous page and a fingerprint of the
filters it was issued for, so a client that changes filters mid-way gets a
precise error instead of a silently wrong page. Callers put the tenant among
the filters, so a token read by another tenant is refused the same way.
Tokens are not secret: every query is scoped to the caller's tenant, so a
crafted token can only move the starting point within the caller's own data;
`PageRequest.key` and the callers' own range checks keep it from reaching a
query with a value PostgreSQL would refuse (an INTERNAL error instead of
INVALID_ARGUMENT).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from creditwatch.server.domain.errors import InvalidArgument

_VERSION = 1
# PostgreSQL's bigint: a larger key integer fails in the query, not here.
_MIN_INT, _MAX_INT = -(2**63), 2**63 - 1
# The longest token this server issues is about 200 characters (ListAlerts by
# priority: a float, a severity, a time and two bigints). A longer one is
# refused before it is decoded: a crafted token must cost little to refuse,
# and JSON nested a few thousand levels deep would exhaust the parser's stack.
MAX_TOKEN_CHARS = 1024


@dataclass(frozen=True)
class PageRequest:
    """A validated page size and the key to continue after (None = first page)."""

    size: int
    after: tuple[Any, ...] | None

    def key(self, *kinds: type) -> tuple[Any, ...] | None:
        """`after`, checked to hold values of `kinds` (a decoded but forged or
        foreign token must not reach a query)."""
        if self.after is None:
            return None
        if len(self.after) != len(kinds) or not all(
            type(value) is kind and _storable(value)
            for value, kind in zip(self.after, kinds, strict=False)
        ):
            raise _foreign_token()
        return self.after

    def time_and_id(self) -> tuple[datetime, uuid.UUID] | None:
        """`after` as (create time, id), for listings keyed on both; a time
        without its UTC offset is refused, as the server never issues one, and
        so is one that is no time in UTC (0001-01-01T00:00+14:00 is in year 0
        there, which neither Python nor the driver can convert)."""
        key = self.key(str, str)
        if key is None:
            return None
        try:
            stamp, row_id = datetime.fromisoformat(key[0]), uuid.UUID(key[1])
        except ValueError:
            raise _foreign_token() from None
        if stamp.tzinfo is None:
            raise _foreign_token()
        try:
            stamp = stamp.astimezone(UTC)
        except OverflowError:
            raise _foreign_token() from None
        return stamp, row_id


def _storable(value: object) -> bool:
    """Whether PostgreSQL can take `value` as a query parameter: JSON decodes
    integers of any size and strings with NUL or lone surrogates, which no
    token this server issued holds."""
    if isinstance(value, int):
        return _MIN_INT <= value <= _MAX_INT
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return "\x00" not in value
    return True


def _foreign_token() -> InvalidArgument:
    return InvalidArgument.single(
        "page_token", "not a token this server issued; start again with an empty token"
    )


def fingerprint(*filters: object) -> str:
    """A short stable digest of the filters a listing was asked with."""
    raw = json.dumps(filters, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def tenant_fingerprints(tenant: uuid.UUID, *filters: object) -> tuple[str, str]:
    """(the fingerprint of a tenant's listing, the one its tokens had before
    tokens named the tenant): the second is accepted too for one release, so
    that listings paged through a rolling upgrade go on (see `page_request`)."""
    return fingerprint(str(tenant), *filters), fingerprint(*filters)


def encode_token(last_key: tuple[Any, ...], filters_fingerprint: str) -> str:
    """Token for the page after the row whose sort key is `last_key`."""
    body = json.dumps({"v": _VERSION, "k": list(last_key), "f": filters_fingerprint})
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def page_request(
    page_size: int,
    page_token: str,
    filters_fingerprint: str,
    *,
    default_size: int,
    max_size: int,
    legacy: str | None = None,
) -> PageRequest:
    """Validate `page_size` and decode `page_token`, naming the bad field; a
    token of the `legacy` fingerprint is accepted too (`tenant_fingerprints`)."""
    if page_size < 0 or page_size > max_size:
        raise InvalidArgument.single("page_size", f"must be between 0 and {max_size}")
    size = page_size or default_size
    if not page_token:
        return PageRequest(size, None)
    if len(page_token) > MAX_TOKEN_CHARS:
        raise InvalidArgument.single(
            "page_token",
            f"longer than any token this server issues ({MAX_TOKEN_CHARS:,} characters at "
            "most); start again with an empty token",
        )
    try:
        padded = page_token + "=" * (-len(page_token) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(body, dict) or body.get("v") != _VERSION:
            raise ValueError("unknown version")
        key = body["k"]
        if not isinstance(key, list):
            raise ValueError("bad key")
    except (ValueError, KeyError, binascii.Error, UnicodeDecodeError, RecursionError):
        # RecursionError: deeply nested JSON, should the cap above ever allow it.
        raise _foreign_token() from None
    if body.get("f") not in (filters_fingerprint, legacy or filters_fingerprint):
        raise InvalidArgument.single(
            "page_token", "was issued for different filters; repeat the same filters or start over"
        )
    return PageRequest(size, tuple(key))
