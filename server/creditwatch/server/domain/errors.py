"""The few typed errors domain and store code raise.

`creditwatch.server.api.errors` is the one place that maps them to gRPC status
codes with `google.rpc` details; nothing else needs to know about gRPC.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field, named by its path in the request (e.g. `entries[3].company`)."""

    field: str
    description: str


class DomainError(Exception):
    """Base class of the errors a client is meant to see."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    """The request is malformed; nothing was changed."""

    def __init__(self, violations: Iterable[FieldViolation], message: str = "") -> None:
        self.violations = tuple(violations)
        if not message:
            shown = "; ".join(f"{v.field}: {v.description}" for v in self.violations[:3])
            more = len(self.violations) - 3
            message = shown + (f"; and {more} more" if more > 0 else "")
        super().__init__(message)

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgument:
        """An error about one field."""
        return cls([FieldViolation(field, description)])


class NotFound(DomainError):
    """The resource does not exist for the calling tenant."""

    def __init__(self, resource_name: str) -> None:
        super().__init__(f"{resource_name} not found")
        self.resource_name = resource_name


class AlreadyExists(DomainError):
    """A resource with the same identity exists."""


@dataclass(frozen=True)
class PreconditionViolation:
    """One failed precondition, as `google.rpc.PreconditionFailure` reports it."""

    type: str
    subject: str
    description: str


class FailedPrecondition(DomainError):
    """The system is not in a state where the call can run (e.g. an expired cursor)."""

    def __init__(self, message: str, violations: Iterable[PreconditionViolation] = ()) -> None:
        super().__init__(message)
        self.violations = tuple(violations)


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""


class Unauthenticated(DomainError):
    """The caller did not present a valid API key."""


class ResourceExhausted(DomainError):
    """A limit was reached (e.g. a subscriber fell too far behind)."""


class Unavailable(DomainError):
    """Try again shortly (e.g. this replica is shutting down); nothing is lost."""


class Aborted(DomainError):
    """A concurrent change won (e.g. an optimistic-concurrency version check)."""


class OutOfRange(DomainError):
    """A result is too large for its wire type (e.g. a total past int64 units)."""


class Internal(DomainError):
    """An unexpected fault in one part of a call that goes on (a stream's
    item): its message carries an id that finds the traceback in the log."""
