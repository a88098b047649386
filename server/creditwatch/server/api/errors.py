"""The one place where errors become gRPC statuses.

Domain errors map to their codes with `google.rpc` details (BadRequest field
violations for INVALID_ARGUMENT). Anything unexpected answers INTERNAL with a
generic message and an id that finds the traceback in the log; the client never
sees exception text. The wrappers also check the tenant grant each RPC needs
(`api.access`: a read-only key calling a write is PERMISSION_DENIED before
the call does anything) and hold each call's slot of its tenant's quota
(`api.quotas`), so a call over a cap is refused like any domain error.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Literal, Protocol, TypeAlias, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from creditwatch.server import metrics
from creditwatch.server.api.access import grant_needed
from creditwatch.server.api.quotas import Quota, QuotaExceeded, Slots, TenantQuotas
from creditwatch.server.domain import errors
from creditwatch.server.domain.tenants import Caller
from creditwatch.server.store import database

log = logging.getLogger("creditwatch.rpc")

# Details travel in trailers, which gRPC caps (8 KiB soft, 16 KiB hard by
# default): a 10,000-entry batch with every entry wrong must still arrive as
# INVALID_ARGUMENT, so only the first violations are listed.
MAX_VIOLATIONS_SHOWN = 20

_CODES: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.Internal: grpc.StatusCode.INTERNAL,
}


def status_for(error: errors.DomainError) -> tuple[grpc.StatusCode, str, bytes]:
    """(code, message, serialized google.rpc.Status) for a domain error."""
    code = next(c for t, c in _CODES.items() if isinstance(error, t))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=error.message)
    if isinstance(error, errors.InvalidArgument):
        shown = error.violations[:MAX_VIOLATIONS_SHOWN]
        detail = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description[:300]
                )
                for v in shown
            ]
        )
        hidden = len(error.violations) - len(shown)
        if hidden > 0:
            detail.field_violations.add(
                field="", description=f"and {hidden:,} more violations like these, not listed"
            )
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    elif isinstance(error, errors.FailedPrecondition) and error.violations:
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=v.type, subject=v.subject, description=v.description
                )
                for v in error.violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(failure)
        status.details.append(packed)
    elif isinstance(error, QuotaExceeded):
        quota = error_details_pb2.QuotaFailure(
            violations=[
                error_details_pb2.QuotaFailure.Violation(
                    subject=error.subject, description=error.description
                )
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(quota)
        status.details.append(packed)
    elif isinstance(error, errors.NotFound):
        info = error_details_pb2.ResourceInfo(
            resource_name=error.resource_name, description=error.message
        )
        packed = any_pb2.Any()
        packed.Pack(info)
        status.details.append(packed)
    return code, error.message, status.SerializeToString()


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: errors.DomainError) -> None:
    """End the call with the status that `error` maps to (raises AbortError)."""
    code, message, details = status_for(error)
    await context.abort(code, message, trailing_metadata=(("grpc-status-details-bin", details),))


def _observe(rpc: str, code: str, started: float) -> None:
    metrics.RPC_SECONDS.labels(rpc, code).observe(time.perf_counter() - started)


def _code_name(error: Exception) -> str:
    if isinstance(error, errors.DomainError):
        return next(c for t, c in _CODES.items() if isinstance(error, t)).name
    if database.connection_lost(error):
        return "UNAVAILABLE"
    if database.text_refused(error):
        return "INVALID_ARGUMENT"
    return "INTERNAL"


async def _end_with(
    context: grpc.aio.ServicerContext[Any, Any], rpc: str, error: Exception
) -> None:
    """Abort the call for `error`: its own status if it is a domain error, else
    INTERNAL with an id that finds the traceback in the log (raises AbortError)."""
    if isinstance(error, errors.DomainError):
        log.info(
            "rpc refused",
            extra={"rpc": rpc, "error": type(error).__name__, "detail": error.message},
        )
        await abort(context, error)
    if database.connection_lost(error):
        # Not a fault of the request: UNAVAILABLE, which clients retry where
        # a call is safe to repeat (the SDK does for idempotent calls), not
        # INTERNAL. As with any UNAVAILABLE, a write whose commit was under
        # way when the connection went may have happened.
        log.warning("rpc failed: database unreachable", extra={"rpc": rpc, "error": str(error)})
        await abort(context, errors.Unavailable("the database connection was lost; retry"))
    if database.text_refused(error):
        # A NUL character in some free text that no check caught (those that
        # do name the field): the call's transaction rolled back, so nothing
        # of it was written.
        log.info("rpc refused: text PostgreSQL cannot store", extra={"rpc": rpc})
        await abort(
            context,
            errors.InvalidArgument.single(
                "", "a text field holds a NUL character (U+0000), which cannot be stored"
            ),
        )
    error_id = uuid.uuid4().hex[:12]
    log.error("rpc failed", exc_info=error, extra={"rpc": rpc, "error_id": error_id})
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error; quote reference {error_id}")


# The caps of this process's server (`limit_tenants`) and the slots taken.
_quotas = TenantQuotas.unlimited()
_slots = Slots()


def limit_tenants(quotas: TenantQuotas) -> None:
    """Cap each tenant's calls from now on (app wiring, before the server starts)."""
    global _quotas
    _quotas = quotas


def running(kind: Literal["unary", "server_streams", "bidi_streams"], tenant: uuid.UUID) -> int:
    """How many calls of `tenant` hold a slot of the quota `kind` now."""
    quota: Quota = getattr(_quotas, kind)
    return _slots.running(quota, tenant)


class HasAuthenticator(Protocol):
    """A servicer that can tell who is calling."""

    async def caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        """The calling tenant and its key's grants, or raise Unauthenticated."""


S = TypeVar("S", bound=HasAuthenticator)
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def unary(
    method: Callable[[S, Req, uuid.UUID], Awaitable[Resp]],
) -> Callable[[S, Req, Ctx], Awaitable[Resp]]:
    """Wrap a unary RPC: authenticate, check the RPC's tenant grant, call with the
    tenant id, map errors, log."""

    async def call(self: S, request: Req, caller: Caller) -> Resp:
        return await method(self, request, caller.tenant_id)

    return functools.wraps(method)(unary_as_caller(call, method.__name__))


def unary_as_caller(
    method: Callable[[S, Req, Caller], Awaitable[Resp]], name: str = ""
) -> Callable[[S, Req, Ctx], Awaitable[Resp]]:
    """Like `unary`, for RPCs that need the caller's grants, not only its tenant.
    The call holds a slot of its tenant's `unary` quota while it runs."""
    name = name or method.__name__
    needed = grant_needed(name)

    @functools.wraps(method)
    async def wrapper(self: S, request: Req, context: Ctx) -> Resp:
        started = time.perf_counter()
        try:
            caller = await self.caller(context)
            caller.require(needed)
            give_back = _slots.take(_quotas.unary, caller.tenant_id)
            try:
                response = await method(self, request, caller)
            finally:
                give_back()
        except grpc.aio.AbortError:
            _observe(name, "ABORTED_BY_HANDLER", started)
            raise
        except Exception as error:
            _observe(name, _code_name(error), started)
            await _end_with(context, name, error)
            raise AssertionError("unreachable") from None
        _observe(name, "OK", started)
        if log.isEnabledFor(logging.DEBUG):  # the extra dict is not free on hot paths
            log.debug(
                "rpc ok",
                extra={"rpc": name, "ms": round((time.perf_counter() - started) * 1000, 2)},
            )
        return response

    return wrapper


def _take_stream_slot(quota: Quota, tenant: uuid.UUID, context: Ctx) -> Callable[[], None]:
    """Take a slot of `tenant`'s `quota` for a stream (or raise QuotaExceeded);
    returns the call that gives it back. The call's end gives it back too: a
    generator that grpc left at a `yield` (the client went away while a message
    was being sent) is closed only when collected."""
    give_back = _slots.take(quota, tenant)
    # The stubs type the callback as a class, not a protocol of callables.
    context.add_done_callback(lambda _: give_back())  # type: ignore[arg-type]
    return give_back


@contextlib.contextmanager
def _stream_slot(quota: Quota, tenant: uuid.UUID, context: Ctx) -> Iterator[None]:
    """Hold a slot of `tenant`'s `quota` while a stream runs (`_take_stream_slot`)."""
    give_back = _take_stream_slot(quota, tenant, context)
    try:
        yield
    finally:
        give_back()


REFUSAL_QUIET_SECONDS = 0.5
"""How long a refused bidirectional stream waits for the client's next message
before the refusal goes out (`_hear_out`)."""
REFUSAL_HEARING_SECONDS = 2.0
"""The longest a refused bidirectional stream reads on before it answers."""
REFUSAL_HEARING_MESSAGES = 16
"""The most messages a refused bidirectional stream reads before it answers."""
REFUSALS_HEARD_AT_ONCE = 32
"""Refused streams heard out at once, all tenants and callers with no valid
key together; past it a refusal goes out at once."""
_hearings = 0


async def _hear_out(requests: AsyncIterator[Any]) -> float:
    """Read and drop what a client sends on a stream about to be refused,
    until it half-closes, goes quiet for REFUSAL_QUIET_SECONDS, or
    REFUSAL_HEARING_SECONDS or REFUSAL_HEARING_MESSAGES are reached; returns
    the seconds it took. A grpc.aio client whose write fails because the
    server has already ended the call reports INTERNAL ("Internal error from
    Core") in place of the server's status (grpc#36066); heard out, the usual
    client, which writes and then reads, and one that writes all it has and
    then half-closes, both hear the refusal itself. Bounded, and at most
    REFUSALS_HEARD_AT_ONCE at a time, so refusals cannot be made to hold a
    replica's work."""
    global _hearings
    if _hearings >= REFUSALS_HEARD_AT_ONCE:
        return 0.0
    _hearings += 1
    started = time.monotonic()
    end = started + REFUSAL_HEARING_SECONDS
    messages = aiter(requests)
    try:
        for _ in range(REFUSAL_HEARING_MESSAGES):
            left = end - time.monotonic()
            if left <= 0:
                break
            async with asyncio.timeout(min(left, REFUSAL_QUIET_SECONDS)):
                await anext(messages)
    except (StopAsyncIteration, TimeoutError):
        pass
    except Exception as error:  # the call ended meanwhile: the refusal goes nowhere
        log.debug("refused stream ended while heard out", extra={"error": str(error)})
    finally:
        _hearings -= 1
    return time.monotonic() - started


class _Clock:
    """When a stream started, for its duration; moved on by time that is not
    the call's own work (a refused stream heard out)."""

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = time.perf_counter()


@contextlib.asynccontextmanager
async def _streaming(name: str, context: Ctx) -> AsyncIterator[_Clock]:
    """Map errors raised while a stream runs to statuses, and record the
    stream's duration and outcome."""
    clock = _Clock()
    code = "OK"
    try:
        yield clock
    except grpc.aio.AbortError:
        code = "ABORTED_BY_HANDLER"
        raise
    except grpc.aio.BaseError:
        # grpc's own errors from `context.write` (the client went away while a
        # write was pending, the server is stopping): grpc handles them, as it
        # does for a yielding handler; they are not the handler's failures.
        code = "CANCELLED"
        raise
    except asyncio.CancelledError:
        code = "CANCELLED"
        raise
    except Exception as error:
        code = _code_name(error)
        await _end_with(context, name, error)
    finally:
        _observe(name, code, clock.started)


async def _tenant_granted(
    name: str, context: Ctx, caller: Callable[[Ctx], Awaitable[Caller]]
) -> uuid.UUID:
    """The calling tenant, once its key is known to carry the grant `name` needs."""
    who = await caller(context)
    who.require(grant_needed(name))
    return who.tenant_id


async def _guarded_stream(
    name: str,
    context: Ctx,
    requests: AsyncIterator[Any],
    responses: Callable[[uuid.UUID], AsyncIterator[Resp]],
    caller: Callable[[Ctx], Awaitable[Caller]],
) -> AsyncIterator[Resp]:
    """Authenticate and check the RPC's tenant grant, then stream
    `responses(tenant)` (see `_streaming`) while holding a slot of the tenant's
    `bidi_streams` quota. A stream refused before it starts hears the client's
    `requests` out first (`_hear_out`)."""
    async with _streaming(name, context) as clock:
        try:
            tenant = await _tenant_granted(name, context, caller)
            give_back = _take_stream_slot(_quotas.bidi_streams, tenant, context)
        except Exception:  # refused, or the keys could not be read
            clock.started += await _hear_out(requests)
            raise
        try:
            async for response in responses(tenant):
                yield response
        finally:
            give_back()


async def _guarded_writes(
    name: str,
    context: Ctx,
    writes: Callable[[uuid.UUID], Awaitable[None]],
    caller: Callable[[Ctx], Awaitable[Caller]],
) -> None:
    """Authenticate and check the RPC's tenant grant, then run `writes(tenant)`,
    a handler that sends with `context.write` (see `_streaming`), while holding
    a slot of the tenant's `server_streams` quota."""
    async with _streaming(name, context):
        tenant = await _tenant_granted(name, context, caller)
        with _stream_slot(_quotas.server_streams, tenant, context):
            await writes(tenant)


def server_stream_writes(
    method: Callable[[S, Req, uuid.UUID, Ctx], Awaitable[None]],
) -> Callable[[S, Req, Ctx], Awaitable[None]]:
    """Wrap a server-streaming RPC whose handler sends with `await
    context.write(...)`: authenticate, map errors raised while streaming to
    statuses, log. Writing, not yielding: a message then passes no generator
    frames on its way to grpc (three when a wrapper re-yields a generator's),
    which a fan-out of one alert to a thousand streams pays a thousand times."""

    @functools.wraps(method)
    async def wrapper(self: S, request: Req, context: Ctx) -> None:
        await _guarded_writes(
            method.__name__,
            context,
            lambda tenant: method(self, request, tenant, context),
            self.caller,
        )

    return wrapper


STREAM_KEY_CHECK_SECONDS = 5.0
"""How often a bidirectional stream re-checks its key as messages come in."""


async def _rechecked(
    requests: AsyncIterator[Req],
    context: Ctx,
    caller: Callable[[Ctx], Awaitable[Caller]],
) -> AsyncIterator[Req]:
    """`requests`, ending the call UNAUTHENTICATED ("API key revoked") once its
    key no longer authenticates: checked as messages arrive, at most every
    STREAM_KEY_CHECK_SECONDS, from the authenticator's cache (a query per key
    and cache period, not per message). With the database out of reach the
    stream goes on, as an alert stream's check does."""
    due = time.monotonic() + STREAM_KEY_CHECK_SECONDS
    async for request in requests:
        if time.monotonic() >= due:
            try:
                await caller(context)
            except errors.Unauthenticated:
                raise errors.Unauthenticated("API key revoked") from None
            except Exception as error:
                if not database.connection_lost(error):
                    raise
                log.warning("could not re-check an API key", extra={"error": str(error)})
            due = time.monotonic() + STREAM_KEY_CHECK_SECONDS
        yield request


def bidi_stream(
    method: Callable[[S, AsyncIterator[Req], uuid.UUID], AsyncIterator[Resp]],
) -> Callable[[S, AsyncIterator[Req], Ctx], AsyncIterator[Resp]]:
    """Wrap a bidirectional-streaming RPC like `unary` wraps unary ones; the
    stream's key is re-checked as its messages come in (`_rechecked`)."""

    @functools.wraps(method)
    async def wrapper(self: S, requests: AsyncIterator[Req], context: Ctx) -> AsyncIterator[Resp]:
        checked = _rechecked(requests, context, self.caller)
        async for response in _guarded_stream(
            method.__name__,
            context,
            requests,
            lambda tenant: method(self, checked, tenant),
            self.caller,
        ):
            yield response

    return wrapper
