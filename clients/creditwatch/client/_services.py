"""Typed clients of ScoringService, CreditLimitService and PortfolioService."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import grpc

from creditwatch.client._errors import error_from_rpc
from creditwatch.client._messages import MoneyLike, _money, company
from creditwatch.client._messages import company as company_ref
from creditwatch.client._retry import CallContext
from creditwatch.v1 import (
    common_pb2,
    companies_pb2,
    limits_pb2,
    limits_pb2_grpc,
    portfolio_pb2,
    portfolio_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
)

_FIRST_CHUNK = 32
"""Items in `score_many`'s first chunk."""


class ScoringClient:
    """Scores (`ScoringService`); get it as `client.scoring`."""

    def __init__(self, channel: grpc.aio.Channel, context: CallContext) -> None:
        self._stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        self._call = context

    async def score_company(
        self, country: str, register_number: str, *, rpc_timeout: float | None = None
    ) -> common_pb2.Score:
        """The company's current score (computed and stored if it has none yet)."""
        response = await self._call.unary(
            self._stub.ScoreCompany,
            scoring_pb2.ScoreCompanyRequest(company=company(country, register_number)),
            retryable=True,
            rpc_timeout=rpc_timeout,
        )
        return response.score

    async def score_many(
        self,
        items: Iterable[scoring_pb2.ScoreItem],
        *,
        chunk_size: int = 1_000,
    ) -> AsyncIterator[scoring_pb2.ScoreItemResult]:
        """Score a whole uploaded list ("portfolio washing") over one StreamScores
        stream, in chunks of `chunk_size` (at most 1,000); yields one result per
        item, in order, each a score or a per-item error. Build items with
        `score_item`."""
        if not 1 <= chunk_size <= 1_000:
            raise ValueError("chunk_size must be 1..1,000")

        # The rest of the chunks follow the first one's answer, and the first
        # is small (on a slow link it arrives within the server's wait): a
        # stream the server refuses (a tenant's cap, a revoked key) then ends
        # with no write of ours in flight, and its status arrives as sent. A
        # write that fails because the call has ended turns the status into
        # INTERNAL in grpc.aio (grpc#36066).
        answered = asyncio.Event()
        failed: list[Exception] = []

        async def chunks() -> AsyncIterator[scoring_pb2.StreamScoresRequest]:
            size = min(chunk_size, _FIRST_CHUNK)
            batch: list[scoring_pb2.ScoreItem] = []
            try:
                for item in items:
                    batch.append(item)
                    if len(batch) == size:
                        yield scoring_pb2.StreamScoresRequest(items=batch)
                        batch, size = [], chunk_size
                        await answered.wait()
                        if call.done():
                            return
            except Exception as error:  # the caller's items: raised from score_many
                failed.append(error)
                call.cancel()
                return
            if batch:
                yield scoring_pb2.StreamScoresRequest(items=batch)

        call = self._stub.StreamScores(chunks(), metadata=tuple(self._call.metadata))
        try:
            async for response in call:
                answered.set()
                for result in response.results:
                    yield result
        except grpc.aio.AioRpcError as rpc_error:
            raise error_from_rpc(rpc_error) from rpc_error
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if failed and (task is None or not task.cancelling()):
                raise failed[0] from None  # grpc cancelled the call for it
            raise
        finally:
            answered.set()
            call.cancel()  # a no-op once it ended; else the caller stopped early


def score_item(
    correlation_id: str,
    *,
    company: tuple[str, str] | None = None,
    financial_statement: companies_pb2.FinancialStatement | None = None,
) -> scoring_pb2.ScoreItem:
    """A StreamScores item: a known company (country, number) or a statement."""
    item = scoring_pb2.ScoreItem(correlation_id=correlation_id)
    if company is not None:
        item.company.CopyFrom(company_ref(*company))
    if financial_statement is not None:
        item.financial_statement.CopyFrom(financial_statement)
    return item


class CreditLimitsClient:
    """Credit limits (`CreditLimitService`); get it as `client.limits`."""

    def __init__(self, channel: grpc.aio.Channel, context: CallContext) -> None:
        self._stub = limits_pb2_grpc.CreditLimitServiceStub(channel)
        self._call = context

    async def decide(
        self,
        country: str,
        register_number: str,
        amount: MoneyLike,
        payment_terms_days: int,
        *,
        current_exposure: MoneyLike | None = None,
        external_reference: str = "",
        request_id: str = "",
        rpc_timeout: float | None = None,
    ) -> limits_pb2.CreditLimitDecision:
        """Decide a requested credit limit; with `request_id` a retry returns the
        first decision (retried on UNAVAILABLE only then)."""
        request = limits_pb2.DecideCreditLimitRequest(
            company=company(country, register_number),
            requested_amount=_money(amount),
            requested_payment_terms_days=payment_terms_days,
            external_reference=external_reference,
            request_id=request_id,
        )
        if current_exposure is not None:
            request.current_exposure.CopyFrom(_money(current_exposure))
        response = await self._call.unary(
            self._stub.DecideCreditLimit,
            request,
            retryable=bool(request_id),
            rpc_timeout=rpc_timeout,
        )
        return response.decision

    async def list(
        self, *, page_size: int = 500, rpc_timeout: float | None = None
    ) -> AsyncIterator[limits_pb2.CreditLimit]:
        """Every standing limit of the tenant, newest first."""
        request = limits_pb2.ListCreditLimitsRequest(page_size=page_size)
        async for page in self._call.pages(
            self._stub.ListCreditLimits, request, rpc_timeout=rpc_timeout
        ):
            for limit in page.credit_limits:
                yield limit


class PortfolioClient:
    """The portfolio view (`PortfolioService`); get it as `client.portfolio`."""

    def __init__(self, channel: grpc.aio.Channel, context: CallContext) -> None:
        self._stub = portfolio_pb2_grpc.PortfolioServiceStub(channel)
        self._call = context

    async def summary(
        self,
        watch_list: str,
        reporting_currency: str,
        *,
        loss_given_default: float | None = None,
        top_contributor_count: int = 10,
        rpc_timeout: float | None = None,
    ) -> portfolio_pb2.GetPortfolioSummaryResponse:
        """Count, exposure and expected loss by class, and the top contributors."""
        request = portfolio_pb2.GetPortfolioSummaryRequest(
            watch_list=watch_list,
            reporting_currency=reporting_currency,
            top_contributor_count=top_contributor_count,
        )
        if loss_given_default is not None:
            request.loss_given_default = loss_given_default
        response: portfolio_pb2.GetPortfolioSummaryResponse = await self._call.unary(
            self._stub.GetPortfolioSummary, request, retryable=True, rpc_timeout=rpc_timeout
        )
        return response
