"""Alert positions and the opaque cursors clients see.

A position is (xid, seq): the writing transaction's id and the row's
identity. Positions are compared as tuples. Both halves are the cluster's,
not the tenant's: in plain sight, a tenant's heartbeats would show the rate
of transactions of the whole cluster, and the gaps between its own alerts'
positions how many alerts other tenants got in between. So a cursor is a
position sealed for its tenant (`CursorKeys`): encrypted with a key of the
tenant's own (AES on the one 16-byte block), with the tenant's tag (a short
hash of its id, so a cursor pasted into another tenant's call is refused as
such) and a MAC over both, so a cursor the server did not issue is refused
rather than read as some position. The keys derive from a deployment secret
every replica shares (store.secrets), so a cursor from one replica resumes on
any other.

Cursors of the first layout (version 1: the position in plain, with the
tenant's tag), issued by earlier releases, are read for `LEGACY_DAYS` after
the secret was made (the upgrade), so a client that kept one resumes across
the upgrade. Anyone can write such a cursor for any position, so accepting
them for good would let a tenant probe positions again; after the window
one is refused as expired (FAILED_PRECONDITION, CURSOR_EXPIRED), which a
client handles as it handles a cursor past retention: resubscribe at "now"
and resynchronise with ListAlerts.

Left visible: whether a heartbeat's cursor changed since the last one (the
settled position moves with any transaction in the cluster), one bit per
heartbeat interval of 5 s or more.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from creditwatch.server.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    PreconditionViolation,
)

MAX_SEQ = 2**63 - 1
_PLAIN = struct.Struct(">QQ")
_LEGACY = struct.Struct(">BQQ4s")  # version 1: the position in plain
_SEALED = struct.Struct(">B16s4s8s")  # version 2: ciphertext, tenant tag, MAC
_LEGACY_VERSION = 1
_VERSION = 2
_DERIVE = b"creditwatch alert cursor v2"
_CACHED_TENANTS = 10_000
SECRET_BYTES = 32
LEGACY_DAYS = 7


@dataclass(frozen=True, order=True)
class Position:
    """A point in the alert order; an alert at P is "after" every position < P."""

    xid: int
    seq: int

    @classmethod
    def settled_below(cls, xmin: int) -> Position:
        """The position that covers every row of transactions older than `xmin`."""
        return cls(max(xmin - 1, 0), MAX_SEQ)


ORIGIN = Position(0, 0)


def _tag(tenant: uuid.UUID) -> bytes:
    return hashlib.sha256(tenant.bytes).digest()[:4]


def _refused(field: str) -> InvalidArgument:
    return InvalidArgument.single(field, "not a cursor this server issued")


class _TenantKey:
    """One tenant's cipher and MAC key."""

    def __init__(self, secret: bytes, tenant: uuid.UUID) -> None:
        derived = hmac.digest(secret, _DERIVE + tenant.bytes, "sha256")
        self.cipher = Cipher(algorithms.AES128(derived[:16]), modes.ECB())
        self.mac_key = derived[16:]
        self.tag = _tag(tenant)

    def mac(self, body: bytes) -> bytes:
        return hmac.digest(self.mac_key, body, "sha256")[:8]


def _legacy_expired(field: str) -> FailedPrecondition:
    return FailedPrecondition(
        "a cursor of an earlier release, no longer accepted; resynchronise: subscribe from "
        "START_POSITION_NOW, then rebuild state with ListAlerts",
        [
            PreconditionViolation(
                "CURSOR_EXPIRED",
                field,
                f"cursors of releases before sealed cursors are read for {LEGACY_DAYS} days "
                "after the upgrade",
            )
        ],
    )


class CursorKeys:
    """Seals positions into cursors and opens them, per tenant, with keys
    derived from the deployment's secret (see the module's doc)."""

    def __init__(self, secret: bytes, made: datetime | None = None) -> None:
        """`made`: when the secret was made (the upgrade to sealed cursors);
        cursors of the earlier layout are read until LEGACY_DAYS after it
        (None: not at all)."""
        if len(secret) < 16:
            raise ValueError("a cursor secret has at least 16 bytes")
        self._secret = secret
        self._legacy_until = made + timedelta(days=LEGACY_DAYS) if made is not None else None
        self._tenants: OrderedDict[uuid.UUID, _TenantKey] = OrderedDict()

    def _key(self, tenant: uuid.UUID) -> _TenantKey:
        key = self._tenants.get(tenant)
        if key is None:
            key = self._tenants[tenant] = _TenantKey(self._secret, tenant)
            if len(self._tenants) > _CACHED_TENANTS:
                self._tenants.popitem(last=False)
        else:
            self._tenants.move_to_end(tenant)
        return key

    def legacy_accepted(self) -> bool:
        """Whether cursors and page tokens of the earlier layout are still read."""
        return self._legacy_until is not None and datetime.now(UTC) < self._legacy_until

    def encode(self, position: Position, tenant: uuid.UUID, purpose: bytes = b"") -> str:
        """The opaque cursor of a position for a tenant. A `purpose` (b"page":
        the position a ListAlerts page token continues after, which may be an
        alert whose transaction is not settled) is in the cursor's MAC, so a
        cursor sealed for one purpose is refused where another is read: an
        alert stream cannot be resumed from a page token's position."""
        key = self._key(tenant)
        encryptor = key.cipher.encryptor()
        sealed = encryptor.update(_PLAIN.pack(position.xid, position.seq)) + encryptor.finalize()
        body = bytes([_VERSION]) + sealed + key.tag
        raw = body + key.mac(purpose + body)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def decode(
        self, cursor: str, tenant: uuid.UUID, field: str, purposes: tuple[bytes, ...] = (b"",)
    ) -> Position:
        """The position of a cursor sealed for one of `purposes`; INVALID_ARGUMENT
        on `field` if it is malformed, was not issued by this deployment (or for
        another purpose), or was issued to another tenant; FAILED_PRECONDITION
        (CURSOR_EXPIRED) for one of the earlier layout past the window it is
        read in."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raise _refused(field) from None
        if len(raw) == _SEALED.size and raw[0] == _VERSION:
            _, sealed, tag, mac = _SEALED.unpack(raw)
            key = self._key(tenant)
            body = raw[: -len(mac)]
            if not any(hmac.compare_digest(mac, key.mac(p + body)) for p in purposes):
                if tag != key.tag:  # the tag tells why (it is no secret)
                    raise InvalidArgument.single(field, "was issued to another tenant")
                raise _refused(field)
            decryptor = key.cipher.decryptor()
            xid, seq = _PLAIN.unpack(decryptor.update(sealed) + decryptor.finalize())
        elif len(raw) == _LEGACY.size and raw[0] == _LEGACY_VERSION:
            _, xid, seq, tag = _LEGACY.unpack(raw)
            if xid > MAX_SEQ or seq > MAX_SEQ:
                raise _refused(field)
            if tag != _tag(tenant):
                raise InvalidArgument.single(field, "was issued to another tenant")
            if not self.legacy_accepted():
                raise _legacy_expired(field)
        else:
            raise _refused(field)
        if xid > MAX_SEQ or seq > MAX_SEQ:
            raise _refused(field)
        return Position(xid, seq)
