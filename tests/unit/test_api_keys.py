"""API keys: format, parsing, and that only the hash identifies a key."""

from __future__ import annotations

import uuid

import pytest

from creditwatch.server.domain.errors import Unauthenticated
from creditwatch.server.domain.tenants import key_matches, mint_key, parse_key


def test_minted_key_parses_back_and_matches_its_hash() -> None:
    tenant = uuid.uuid4()
    key = mint_key(tenant)
    parsed = parse_key(key.token)
    assert parsed.tenant_id == tenant
    assert parsed.key_id == key.key_id
    assert key_matches(parsed, key.secret_sha256)
    # The secret is everything after the key id (token_urlsafe may contain
    # "_" itself: splitting on the last "_" made this check flaky).
    assert parsed.secret == key.token.split("_", 3)[3]
    assert len(parsed.secret) >= 40 and parsed.secret not in key.secret_sha256.hex()


def test_a_different_secret_does_not_match() -> None:
    key = mint_key(uuid.uuid4())
    other = mint_key(key.tenant_id)
    assert not key_matches(parse_key(other.token), key.secret_sha256)


@pytest.mark.parametrize("token", ["", "cw_", "Bearer x", "cw_zz_yy_xx"])
def test_malformed_keys_are_unauthenticated(token: str) -> None:
    with pytest.raises(Unauthenticated):
        parse_key(token)
