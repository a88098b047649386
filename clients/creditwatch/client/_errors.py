"""Exceptions the SDK raises for failed calls, built from the `google.rpc.Status` details.

Every failed call raises a `CreditwatchError` subclass chosen by its status
code; the original `grpc.aio.AioRpcError` is kept as `__cause__`.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


class CreditwatchError(Exception):
    """A call the server (or the channel) refused or could not complete.

    Attributes:
        code: the gRPC status code.
        message: the server's message, safe to show to a person.
        field_violations: for INVALID_ARGUMENT, `{field path: description}` from
            the `BadRequest` detail, e.g. `{"entries[17].company.register_number":
            "check digit ..."}`; empty otherwise. Paths name the field in the
            request the caller gave the SDK (see `WatchListsClient.add_entries`).
        resource_name: for NOT_FOUND, the resource from the `ResourceInfo` detail.
        precondition_types: for FAILED_PRECONDITION, the `PreconditionFailure`
            violation types, e.g. `("CURSOR_EXPIRED",)`.
        preconditions: the same as `(type, subject)`, e.g. `("CURSOR_EXPIRED",
            "after_cursor")`: which position expired (the one given, or a
            consumer's stored one).
        quota_violations: for RESOURCE_EXHAUSTED at a per-tenant cap, the
            `QuotaFailure` violations as `(subject, description)`, e.g.
            `("tenants/…", "at most 200 open SubscribeAlerts streams …")`;
            empty for a stream that fell behind.
        status: the whole `google.rpc.Status`, or None if the server sent none.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        field_violations: Mapping[str, str] | None = None,
        resource_name: str = "",
        precondition_types: tuple[str, ...] = (),
        quota_violations: tuple[tuple[str, str], ...] = (),
        status: status_pb2.Status | None = None,
        preconditions: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.field_violations: dict[str, str] = dict(field_violations or {})
        self.resource_name = resource_name
        self.precondition_types = precondition_types
        self.preconditions = preconditions or tuple((t, "") for t in precondition_types)
        self.quota_violations = quota_violations
        self.status = status

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.field_violations:
            text += "".join(f"\n  {f}: {d}" for f, d in self.field_violations.items())
        if self.resource_name:
            text += f" ({self.resource_name})"
        text += "".join(f"\n  {s}: {d}" for s, d in self.quota_violations)
        return text


class InvalidArgumentError(CreditwatchError):
    """INVALID_ARGUMENT: bad input, named in `field_violations`; the call changed nothing."""


class NotFoundError(CreditwatchError):
    """NOT_FOUND: the resource does not exist for this tenant (or is another tenant's)."""


class AlreadyExistsError(CreditwatchError):
    """ALREADY_EXISTS: creating something that exists under a unique key."""


class FailedPreconditionError(CreditwatchError):
    """FAILED_PRECONDITION: valid request, but the state does not allow it."""


class AbortedError(CreditwatchError):
    """ABORTED: a concurrent change won (e.g. a stale version); read again and retry."""


class UnauthenticatedError(CreditwatchError):
    """UNAUTHENTICATED: the API key is missing, malformed or revoked."""


class PermissionDeniedError(CreditwatchError):
    """PERMISSION_DENIED: the API key lacks a grant this call needs."""


class ResourceExhaustedError(CreditwatchError):
    """RESOURCE_EXHAUSTED: a limit was hit: an alert stream fell too far behind,
    or the tenant is at one of the server's per-tenant caps (`quota_violations`
    says which; back off and retry once calls or streams of yours have ended)."""


class UnavailableError(CreditwatchError):
    """UNAVAILABLE: the server is unreachable or shutting down (after any retries)."""


class DeadlineExceededError(CreditwatchError):
    """DEADLINE_EXCEEDED: the call's timeout passed before it completed."""


class UnimplementedError(CreditwatchError):
    """UNIMPLEMENTED: this server version does not implement the call yet."""


class InternalError(CreditwatchError):
    """INTERNAL: an unexpected server fault; the message carries an id for the operator."""


_BY_CODE: dict[grpc.StatusCode, type[CreditwatchError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.INTERNAL: InternalError,
}


def _rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    try:
        status: status_pb2.Status | None = rpc_status.from_call(error)
    except ValueError:  # details contradict the status code: ignore them
        return None
    return status


def error_from_rpc(error: grpc.aio.AioRpcError) -> CreditwatchError:
    """The SDK exception for a failed call, with its `google.rpc` details unpacked."""
    code = error.code()
    status = _rich_status(error)
    violations: dict[str, str] = {}
    resource_name = ""
    preconditions: list[tuple[str, str]] = []
    quotas: list[tuple[str, str]] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            for violation in bad.field_violations:
                # A field with several problems keeps all of them.
                known = violations.get(violation.field)
                violations[violation.field] = (
                    f"{known}; {violation.description}" if known else violation.description
                )
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            info = error_details_pb2.ResourceInfo()
            detail.Unpack(info)
            resource_name = info.resource_name
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            preconditions.extend((v.type, v.subject) for v in failure.violations)
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            quotas.extend((v.subject, v.description) for v in quota.violations)
    kind = _BY_CODE.get(code, CreditwatchError)
    return kind(
        code,
        error.details() or code.name,
        field_violations=violations,
        resource_name=resource_name,
        precondition_types=tuple(kind for kind, _ in preconditions),
        quota_violations=tuple(quotas),
        status=status,
        preconditions=tuple(preconditions),
    )
