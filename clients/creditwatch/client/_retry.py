"""Deadlines, retries with exponential back-off, and error translation for unary calls."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import grpc

from creditwatch.client._errors import CreditwatchError, error_from_rpc

log = logging.getLogger("creditwatch.client")

# What gRPC says when it could not connect, so the request never left the
# client: repeating such a call cannot apply it twice. Any other UNAVAILABLE
# (a connection lost mid-call, a replica failing mid-call) may come after the
# server did the work.
_NOT_SENT = ("failed to connect to all addresses", "DNS resolution failed")


def _never_sent(error: CreditwatchError) -> bool:
    """Whether `error` is an UNAVAILABLE that left the request unsent."""
    return error.code == grpc.StatusCode.UNAVAILABLE and error.message.startswith(_NOT_SENT)


Req = TypeVar("Req")
Resp = TypeVar("Resp")


class PageRequest(Protocol):
    """A `List…` request: it carries the token of the page it asks for."""

    page_token: str


class PageResponse(Protocol):
    """A `List…` response: it carries the token of the next page, empty on the last."""

    next_page_token: str


PageReq = TypeVar("PageReq", bound=PageRequest)
PageResp = TypeVar("PageResp", bound=PageResponse)


@dataclass(frozen=True)
class RetryPolicy:
    """How the SDK retries a call that failed with UNAVAILABLE.

    Only calls that are safe to repeat are retried: reads, updates, and the
    calls with a `request_id`: `CreateWatchList` and the upserting
    `AddEntries` (the SDK always sends one), and `DecideCreditLimit` when it is
    given one. A retry sends the same request again, so within 24 hours the
    server replays the first attempt's result instead of doing the work twice
    (a `request_id` reused for a different request is INVALID_ARGUMENT on
    `request_id`, which is never retried). `DeleteWatchList` is
    retried too; if a retry finds the watch list gone after an attempt whose
    response was lost, that attempt deleted it and the delete succeeds (see
    `WatchListsClient.delete`). `RemoveEntries` has no idempotency key and a
    repeat would count the entries it removed as not found, so it is retried
    only when the request never left the client (the channel could not
    connect). Other codes are never retried. Retries stop early when the
    call's timeout runs out.

    Attempt `n` (1-based) that fails waits `min(max_backoff, initial_backoff *
    multiplier ** (n - 1))` seconds, shortened by a random fraction of up to
    `jitter` so that many clients do not retry in lockstep.

    Attributes:
        max_attempts: attempts in total, including the first; 1 disables retries.
        initial_backoff: seconds before the first retry (before jitter).
        max_backoff: upper bound of the wait between attempts, in seconds.
        multiplier: growth of the wait per attempt.
        jitter: 0..1, the largest fraction taken off each wait at random.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("need 0 <= initial_backoff <= max_backoff")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within 0..1")

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        # Grown step by step and stopped at the cap: multiplier ** (attempt - 1)
        # overflows a float past a thousand attempts (an int one, with an
        # integer multiplier, past that too), long after the cap was reached.
        ceiling = float(self.initial_backoff)
        for _ in range(attempt - 1):
            if ceiling >= self.max_backoff:
                break
            ceiling *= self.multiplier
        ceiling = min(self.max_backoff, ceiling)
        return ceiling * (1.0 - self.jitter * random.random())


@dataclass(frozen=True)
class CallContext:
    """What every call of one client shares: metadata, default timeout, retry policy."""

    metadata: Sequence[tuple[str, str]] = field(repr=False)  # holds the API key
    default_timeout: float | None
    retry: RetryPolicy

    async def unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        *,
        retryable: bool,
        rpc_timeout: float | None,
        idempotent: bool = True,
        if_gone: Resp | None = None,
    ) -> Resp:
        """Call `method` once, retrying UNAVAILABLE when `retryable`.

        `rpc_timeout` (None: the default) bounds the whole call, retries and
        waits included; each attempt gets what is left of it as its deadline.
        A call that is not `idempotent` is retried only while its request never
        left the client. With `if_gone`, a retry answered NOT_FOUND after an
        attempt that may have reached the server returns `if_gone`: that
        attempt did the work (a delete) and its response was lost.
        """
        budget = self.default_timeout if rpc_timeout is None else rpc_timeout
        deadline = None if budget is None else time.monotonic() + budget
        attempts = self.retry.max_attempts if retryable else 1
        attempt = 0
        maybe_sent = False
        while True:
            attempt += 1
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                return await method(request, timeout=remaining, metadata=self.metadata)
            except grpc.aio.AioRpcError as rpc_error:
                error = error_from_rpc(rpc_error)
                if maybe_sent and if_gone is not None and error.code == grpc.StatusCode.NOT_FOUND:
                    log.warning(
                        "a retry found the resource gone: the attempt whose response was lost "
                        "did the work",
                        extra={"attempt": attempt, "error": str(error)},
                    )
                    return if_gone
                wait = self.retry.backoff(attempt)
                unsent = _never_sent(error)
                if not idempotent and error.code == grpc.StatusCode.UNAVAILABLE and not unsent:
                    error.add_note(
                        "the request may have reached the server before the connection "
                        "failed, so it was not repeated: check whether it was applied"
                    )
                    raise error from rpc_error
                if not self._should_retry(error, attempt, attempts, deadline, wait):
                    raise error from rpc_error
                maybe_sent = maybe_sent or not unsent
            log.info(
                "retrying after UNAVAILABLE",
                extra={"attempt": attempt, "wait_seconds": round(wait, 3), "error": str(error)},
            )
            await asyncio.sleep(wait)

    @staticmethod
    def _should_retry(
        error: CreditwatchError,
        attempt: int,
        attempts: int,
        deadline: float | None,
        wait: float,
    ) -> bool:
        if error.code != grpc.StatusCode.UNAVAILABLE or attempt >= attempts:
            return False
        return deadline is None or time.monotonic() + wait < deadline

    async def pages(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[PageReq, PageResp],
        request: PageReq,
        *,
        rpc_timeout: float | None,
    ) -> AsyncIterator[PageResp]:
        """Every page of a `List…` call, following `next_page_token` (each page retried
        on its own)."""
        while True:
            response = await self.unary(method, request, retryable=True, rpc_timeout=rpc_timeout)
            yield response
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token
