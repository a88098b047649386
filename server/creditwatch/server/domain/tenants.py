"""Tenants and API keys: the key format and how a presented key is checked."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from creditwatch.server.domain.errors import PermissionDenied, Unauthenticated

# cw_<tenant id, 32 hex>_<key id, 12 hex>_<secret, 43 url-safe chars>. The tenant
# and key id let the server find the stored hash directly (and route to the
# right shard under Citus); only the secret's SHA-256 is stored. A plain hash
# suffices because the secret is 256 random bits, not a password.
_KEY_PATTERN = re.compile(r"cw_([0-9a-f]{32})_([0-9a-f]{12})_([A-Za-z0-9_\-]{43})")
# How an operator names a key: its id, or the key's public prefix
# (`cw_<tenant id>_<key id>`, with or without the trailing "_").
_KEY_ID_PATTERN = re.compile(r"[0-9a-f]{12}")
_KEY_PREFIX_PATTERN = re.compile(r"cw_([0-9a-f]{32})_([0-9a-f]{12})_?")


@dataclass(frozen=True)
class Tenant:
    """A customer organisation."""

    id: uuid.UUID
    display_name: str


SCOPE_MODELS_ACTIVATE = "models:activate"
"""May change the active default model (it affects every tenant's scores)."""
SCOPE_COMPANIES_WRITE = "companies:write"
"""May write shared company facts (data feeds, register pollers)."""
SCOPE_TENANT_READ = "tenant:read"
"""May read the tenant's data: watch lists, alerts, scores, limits, portfolio."""
SCOPE_TENANT_WRITE = "tenant:write"
"""May change the tenant's data (and read it: every write answers with what it wrote)."""
SCOPES = (SCOPE_TENANT_READ, SCOPE_TENANT_WRITE, SCOPE_MODELS_ACTIVATE, SCOPE_COMPANIES_WRITE)
# Grants that only serve writes: on a read-only key they could never be used.
_WRITE_GRANTS = (SCOPE_MODELS_ACTIVATE, SCOPE_COMPANIES_WRITE)


def is_read_only(scopes: Iterable[str]) -> bool:
    """Whether a key with these grants may only read its tenant's data.

    Tenant access: `tenant:read` alone is read-only; `tenant:write` is read and
    write. A key with neither has both, as every key had before the grants
    existed, so keys created earlier (and first keys) keep full access."""
    granted = frozenset(scopes)
    return SCOPE_TENANT_READ in granted and SCOPE_TENANT_WRITE not in granted


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The grants for a new key, in a stable order and each once; ValueError for
    an unknown grant, or a write grant on a read-only key (it could never use it)."""
    granted = frozenset(scopes)
    unknown = granted - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes {sorted(unknown)}; known: {', '.join(SCOPES)}")
    if is_read_only(granted):
        useless = [s for s in _WRITE_GRANTS if s in granted]
        if useless:
            raise ValueError(
                f"a read-only key ({SCOPE_TENANT_READ!r} without {SCOPE_TENANT_WRITE!r}) "
                f"cannot use {', '.join(map(repr, useless))}: those calls are writes"
            )
    return tuple(s for s in SCOPES if s in granted)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's tenant and the grants the operator gave the key."""

    tenant_id: uuid.UUID
    scopes: frozenset[str] = frozenset()

    @property
    def read_only(self) -> bool:
        """Whether the key may only read its tenant's data (see `is_read_only`)."""
        return is_read_only(self.scopes)

    def has(self, scope: str) -> bool:
        """Whether the key carries `scope`, the implied tenant grants included:
        every key may read, and every key but a read-only one may write."""
        if scope == SCOPE_TENANT_READ:
            return True
        if scope == SCOPE_TENANT_WRITE:
            return not self.read_only
        return scope in self.scopes

    def require(self, scope: str) -> None:
        """PermissionDenied unless the key carries `scope` (see `has`)."""
        if not self.has(scope):
            hint = " (it is a read-only key)" if scope == SCOPE_TENANT_WRITE else ""
            raise PermissionDenied(
                f"this API key lacks the {scope!r} grant{hint}; ask the creditwatch operator"
            )


@dataclass(frozen=True)
class ParsedKey:
    """The parts of a presented API key."""

    tenant_id: uuid.UUID
    key_id: str
    secret: str

    @property
    def secret_sha256(self) -> bytes:
        """What the store keeps instead of the secret."""
        return hashlib.sha256(self.secret.encode()).digest()


@dataclass(frozen=True)
class NewKey:
    """A freshly minted key: `token` is shown once and never stored."""

    tenant_id: uuid.UUID
    key_id: str
    token: str
    secret_sha256: bytes


@dataclass(frozen=True)
class ApiKeyInfo:
    """What an operator may see of a stored key: never its secret or hash."""

    tenant_id: uuid.UUID
    key_id: str
    display_name: str
    scopes: tuple[str, ...]
    create_time: datetime
    revoke_time: datetime | None

    @property
    def read_only(self) -> bool:
        """Whether the key may only read its tenant's data (see `is_read_only`)."""
        return is_read_only(self.scopes)

    @property
    def prefix(self) -> str:
        """The key's public start, `cw_<tenant id>_<key id>_`: matches a key in hand."""
        return key_prefix(self.tenant_id, self.key_id)


@dataclass(frozen=True)
class Revocation:
    """The outcome of revoking a key (idempotent: a revoked key stays as it was)."""

    key: ApiKeyInfo
    already_revoked: bool


def key_prefix(tenant_id: uuid.UUID, key_id: str) -> str:
    """The part of a key before its secret."""
    return f"cw_{tenant_id.hex}_{key_id}_"


def parse_key_reference(text: str) -> tuple[uuid.UUID | None, str]:
    """(tenant id if named, key id) from a key id, a key's prefix or a whole key
    (a leaked key in hand names itself); ValueError otherwise."""
    text = text.strip()
    whole = _KEY_PATTERN.fullmatch(text)
    if whole is not None:
        return uuid.UUID(hex=whole[1]), whole[2]
    text = text.lower()
    if _KEY_ID_PATTERN.fullmatch(text):
        return None, text
    match = _KEY_PREFIX_PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a key id (12 hex digits) or a key prefix (cw_<tenant id>_<key id>)"
        )
    return uuid.UUID(hex=match[1]), match[2]


def mint_key(tenant_id: uuid.UUID) -> NewKey:
    """Create a new random API key for a tenant."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    token = f"cw_{tenant_id.hex}_{key_id}_{secret}"
    return NewKey(tenant_id, key_id, token, hashlib.sha256(secret.encode()).digest())


def parse_key(token: str) -> ParsedKey:
    """Split a presented key; a malformed one is Unauthenticated."""
    match = _KEY_PATTERN.fullmatch(token.strip())
    if match is None:
        raise Unauthenticated("malformed API key")
    return ParsedKey(uuid.UUID(hex=match[1]), match[2], match[3])


def key_matches(parsed: ParsedKey, stored_sha256: bytes) -> bool:
    """Constant-time comparison of the presented secret with the stored hash."""
    return hmac.compare_digest(parsed.secret_sha256, stored_sha256)
