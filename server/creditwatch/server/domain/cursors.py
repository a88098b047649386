"""Alert positions and the opaque cursors clients see.

A position is (xid, seq): the writing transaction's id and the row's
identity. Positions are compared as tuples. A cursor is a position bound to
a tenant (a short tag of the tenant id), so a cursor pasted into another
tenant's call is refused instead of silently meaning something else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
import uuid
from dataclasses import dataclass

from creditwatch.server.domain.errors import InvalidArgument

MAX_SEQ = 2**63 - 1
_LAYOUT = struct.Struct(">BQQ4s")
_VERSION = 1


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


def encode(position: Position, tenant: uuid.UUID) -> str:
    """The opaque cursor of a position for a tenant."""
    raw = _LAYOUT.pack(_VERSION, position.xid, position.seq, _tag(tenant))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, tenant: uuid.UUID, field: str) -> Position:
    """The position of a cursor; INVALID_ARGUMENT on `field` if it is malformed
    or was issued to another tenant."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, xid, seq, tag = _LAYOUT.unpack(raw)
    except (binascii.Error, struct.error, ValueError):
        raise InvalidArgument.single(field, "not a cursor this server issued") from None
    if version != _VERSION or xid > MAX_SEQ or seq > MAX_SEQ:
        raise InvalidArgument.single(field, "not a cursor this server issued")
    if tag != _tag(tenant):
        raise InvalidArgument.single(field, "was issued to another tenant")
    return Position(xid, seq)
